"""How a model's class declares its official file formats (`official_formats`), so that
`official.py` can tell which registered model a file holds and apply the trust rule without a
table of models of its own: a plug-in declares its formats the same way."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sourcetrace.core.errors import SourcetraceError

CONTAINERS = ("nemo", "torch", "espnet")  # what official.inspect_file reads (FileReport.format)

#: Python containers and numpy values: what any official format that pickles more than tensors
#: may hold beyond the weights-only globals (a building block of `pickle_globals` patterns).
PLAIN_PICKLE_GLOBALS = (r"typing\.Any|collections\.defaultdict|pathlib\.(Path|PosixPath|WindowsPath)|numpy\.(dtype|"
                        r"ndarray|(_core|core)\.multiarray\.(_reconstruct|scalar)|dtypes\.\w+DType)")


@dataclass(frozen=True)
class OfficialFormat:
    """One official file format of a model: how a file of it is recognised, how messages name what
    it holds, and which globals beyond weights-only its pickle calls (only those make --trust
    meaningful; any other is refused, trust or not)."""

    container: str                                  # one of CONTAINERS
    display_name: str                               # what the file holds, in words: "a Coqui VITS model"
    keys: tuple[str, ...] = ()                      # torch: strings its pickle holds, every one
    key_prefixes: tuple[tuple[str, ...], ...] = ()  # torch: per group, a string starting with one of them
    nemo_target: str = ""                           # nemo: the class model_config.yaml's `target` names
    espnet_tts: str = ""                            # espnet: config.yaml's `tts` choice
    outranks: tuple[str, ...] = ()                  # models whose format a file of this one matches too
    pickle_globals: str = ""                        # regular expression, matched against "module.name"
    own_config: bool = False                        # the file carries its model config (else: a named config)

    def __post_init__(self):
        told = {"torch": self.keys or self.key_prefixes, "nemo": self.nemo_target, "espnet": self.espnet_tts}
        if self.container not in told:
            raise SourcetraceError(f"OfficialFormat({self.display_name!r}): container {self.container!r} is not one "
                                   f"of {', '.join(CONTAINERS)}")
        if not told[self.container]:
            raise SourcetraceError(f"OfficialFormat({self.display_name!r}): a {self.container} format must say how a "
                                   "file of it is recognised (keys or key_prefixes, nemo_target, espnet_tts)")
        if self.pickle_globals:
            re.compile(self.pickle_globals)  # a bad pattern fails where it is declared

    def holds_keys(self, strings: set[str]) -> bool:
        """Whether a torch file whose pickles hold `strings` is of this format."""
        return set(self.keys) <= strings and all(any(s.startswith(group) for s in strings)
                                                 for group in self.key_prefixes)

    def allows(self, name: str) -> bool:
        """Whether this format's pickle calls the global `name` (beyond weights-only)."""
        return bool(self.pickle_globals) and re.fullmatch(self.pickle_globals, name) is not None
