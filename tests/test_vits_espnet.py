"""ESPnet2's VITS (`vits-espnet`): the generator contract on the tiny config, and its official
format, the packed model espnet_model_zoo distributes, written with ESPnet's own pack code."""

import contextlib
import copy
from pathlib import Path

import pytest
import torch
import yaml

from sourcetrace.generators import build_generator, generator_class, load_checkpoint, load_generator
from sourcetrace.generators.base import GeneratorError
from sourcetrace.testing import generator_checks, parametrize_with_checks

pytestmark = [pytest.mark.slow, pytest.mark.tts]

EXP = Path("exp") / "tts_train_vits_raw_phn_tacotron_espeak_ng_english_us_vits"


def pack_model(generator, folder: Path, name: str = "model.zip", config: dict | None = None,
               state: object = None) -> Path:
    """What ESPnet's recipes run at the end (`python -m espnet2.bin.pack tts --train_config
    exp/.../config.yaml --model_file exp/.../*.pth`): meta.yaml, config.yaml and the state dict,
    by their paths relative to the recipe folder."""
    from espnet2.main_funcs.pack_funcs import pack

    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.chdir(folder):
        EXP.mkdir(parents=True, exist_ok=True)
        (EXP / "config.yaml").write_text(yaml.safe_dump(config or generator.espnet_config, allow_unicode=True),
                                         encoding="utf-8")
        torch.save(generator.model.state_dict() if state is None else state, EXP / "train.total_count.ave_10best.pth")
        pack(files={"model_file": EXP / "train.total_count.ave_10best.pth"},
             yaml_files={"train_config": EXP / "config.yaml"}, outpath=name)
    return folder / name


@parametrize_with_checks(generator_checks(generator_class("vits-espnet"), write_official=pack_model))
def test_vits_espnet_conforms(check, tmp_path):
    check(tmp_path)


def test_packed_tgz_and_what_is_refused(tmp_path):
    from sourcetrace.checkpoints.official import inspect_file
    from sourcetrace.generators.vits_espnet import build_espnet_model

    source = build_generator("vits-espnet", "tiny", seed=3)
    assert source.implementation().startswith("espnet 2")  # corpus rows name the codebase
    # a packed model whose config.yaml is not the named config's (half the width): it defines the model
    narrow = copy.deepcopy(source.espnet_config)
    narrow["tts_conf"]["generator_params"]["hidden_channels"] = 8
    source.model, source.espnet_config = build_espnet_model(narrow, "narrow"), narrow

    tgz = pack_model(source, tmp_path, "model.tgz")
    report = inspect_file(tgz, deep=True)
    assert (report.format, report.holds, report.problem) == ("espnet", "vits-espnet", None)
    loaded = load_checkpoint(None, tgz, config="tiny")  # the file tells its architecture
    assert loaded.architecture == "vits-espnet"
    ids = loaded.text_to_ids("A coin, 2 coins!")
    assert ids == source.text_to_ids("A coin, 2 coins!") and ids.count(2) == 3  # 2: "<space>"
    torch.manual_seed(0)
    wave = loaded.synthesize(ids)
    torch.manual_seed(0)
    assert torch.equal(wave, source.synthesize(ids))

    # a project checkpoint of the loaded model rebuilds it from the pack's config.yaml
    loaded.save(tmp_path / "saved", step=0, role="pretrained")
    reloaded = load_generator(tmp_path / "saved")
    torch.manual_seed(0)
    assert torch.equal(reloaded.synthesize(ids), wave)

    # given as Coqui's VITS, ESPnet's pack is refused: the file says which model it holds
    with pytest.raises(GeneratorError, match="holds an ESPnet2 VITS model, not a Coqui VITS model"):
        load_checkpoint("vits", tgz, config="tiny")
    # a pickle that would call code is refused without unpickling; ESPnet never needs trust
    evil = pack_model(source, tmp_path / "evil", state={"x": print})
    with pytest.raises(GeneratorError, match="builtins.print.*trust or not"):
        loaded.load_official(evil, trust=True)
    # another ESPnet model's pack
    jets = pack_model(source, tmp_path / "jets", config={**source.espnet_config, "tts": "jets"})
    with pytest.raises(GeneratorError, match="holds a espnet-jets model"):
        loaded.load_official(jets)
    # weights that do not fit the config.yaml beside them
    generator_only = {k: v for k, v in source.model.state_dict().items() if not k.startswith("tts.discriminator.")}
    with pytest.raises(GeneratorError, match=r"does not fit .*: \d+ missing \(e.g. \['tts.discriminator"):
        loaded.load_official(pack_model(source, tmp_path / "partial", state=generator_only))
    # a cut archive
    cut = tmp_path / "cut.zip"
    cut.write_bytes((tmp_path / "partial" / "model.zip").read_bytes()[:5000])
    with pytest.raises(GeneratorError, match="cut.zip: truncated or damaged"):
        loaded.load_official(cut)
