"""A leaderboard board: one folder that takes results from many machines and keeps only those that
check out against the board's corpus and protocols.

    BOARD/board.json                    the corpus sha256 and each protocol's sha256, version, levels
    BOARD/results/<name>/result.json    an accepted result, byte for byte as submitted
    BOARD/results/<name>/figures/...    its figures (images checked by content, as the leaderboard does)
    BOARD/ledger.jsonl                  one line per accepted result: time, submitter, sourcetrace
                                        version, the result's own command line, its sha256

A submitted results file is hostile input: besides its schema, its numbers must be the ones its
per-seed values give, its seeds complete, its protocol and corpus the board's. `build` checks the
whole board again (and each result against its ledger sha256) before rendering the site.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import tomllib
from importlib import resources
from pathlib import Path, PurePosixPath

from sourcetrace import __version__
from sourcetrace.benchmark.figures import figure_file
from sourcetrace.benchmark.leaderboard import DEFAULT_TITLE, build_leaderboard
from sourcetrace.benchmark.protocol import Protocol, load_protocol, load_suite
from sourcetrace.benchmark.results import (
    ResultError,
    load_result,
    now_utc,
    number_problems,
    read_result_bytes,
    result_name,
    result_paths,
    validate_result,
)
from sourcetrace.core.fileio import (
    atomic_path,
    copy_file_atomic,
    sha256_file,
    sha256_json,
    write_json_atomic,
    write_text_atomic,
)
from sourcetrace.core.schema import BOARD, check
from sourcetrace.corpus import Corpus, corpus_identity

BOARD_FILE, LEDGER, RESULTS = "board.json", "ledger.jsonl", "results"
_SUBMITTER = re.compile(r"[^\x00-\x1f\x7f]{1,100}")


class BoardError(ResultError):
    pass


def protocols_from(spec: str) -> list[Protocol]:
    """`table1` or `generic` (a suite), or built-in protocol names and .toml files, comma-separated."""
    suites = tomllib.loads(resources.files(__package__).joinpath("suites.toml").read_text(encoding="utf-8"))
    if spec in suites:
        return load_suite(spec)
    protocols = [load_protocol(item) for item in spec.split(",") if item]
    if not protocols:
        raise BoardError(f"--protocols {spec!r} names no protocol")
    return protocols


def corpus_sha256(corpus_dir: str | Path) -> str:
    """The corpus sha256 `sourcetrace bench` writes into results (manifest bytes + every clip's audio hash)."""
    corpus = Corpus.read(corpus_dir)
    return corpus_identity(corpus, {row.clip_id: sha256_file(corpus.audio_path(row)) for row in corpus.rows})["sha256"]


def create_board(board: str | Path, corpus: str | Path | None = None, corpus_hash: str | None = None,
                 protocols: str = "table1") -> tuple[Path, str]:
    """`leaderboard init`: a board for the results of one corpus, given as its folder (hashed as bench
    does) or as its sha256, and `protocols` (protocols_from). Returns the board file and the hash."""
    if (corpus is None) == (corpus_hash is None):
        raise BoardError("give --corpus CORPUS or --corpus-sha256 HEX")
    if corpus is not None:
        corpus_hash = corpus_sha256(corpus)
    assert corpus_hash is not None
    return init_board(board, corpus_hash, protocols_from(protocols)), corpus_hash


def init_board(board: str | Path, corpus_hash: str, protocols: list[Protocol]) -> Path:
    board = Path(board)
    if (board / BOARD_FILE).exists():
        raise BoardError(f"{board / BOARD_FILE} exists: this folder is a board already")
    names = [p.name for p in protocols]
    if len(set(names)) != len(names):
        raise BoardError(f"a protocol name is given twice: {', '.join(names)}")
    meta = {"format": "sourcetrace-board", "format_version": 1, "corpus_sha256": corpus_hash, "created": now_utc(),
            "sourcetrace": __version__,
            "protocols": {p.name: {"sha256": p.sha256, "version": p.version, "title": p.title, "table1_row": p.table1_row,
                                   "levels": list(p.levels), "definition": p.definition} for p in protocols}}
    check(meta, BOARD, "--corpus-sha256 / --protocols", BoardError)
    write_json_atomic(board / BOARD_FILE, meta)
    return board / BOARD_FILE


def read_board(board: str | Path) -> dict:
    path = Path(board) / BOARD_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BoardError(f"{path} not found: create the board with `sourcetrace leaderboard init {board} ...`") from None
    except (OSError, ValueError) as exc:
        raise BoardError(f"{path}: cannot read JSON ({exc})") from None
    return check(meta, BOARD, str(path), BoardError)


def _level_problems(result: dict, levels: list[str]) -> list[str]:
    """A result must score exactly the levels the board's protocol scores."""
    if sorted(result["levels"]) != sorted(levels):
        return [f"levels {sorted(result['levels'])} are not the protocol's {sorted(levels)}"]
    return []


def check_against_board(result: dict, meta: dict, source: str) -> dict:
    """Raise BoardError listing everything in `result` (already schema-checked) that does not match the board."""
    problems = []
    if result["corpus"]["sha256"] != meta["corpus_sha256"]:
        problems.append(f"corpus sha256 {result['corpus']['sha256'][:16]}... is not the board's corpus "
                        f"({meta['corpus_sha256'][:16]}...): a result of another corpus")
    p = result["protocol"]
    board_protocol = meta["protocols"].get(p["name"])
    if board_protocol is None:
        problems.append(f"protocol {p['name']!r} is not on this board (it has {', '.join(sorted(meta['protocols']))})")
    else:
        if (p["sha256"], p["version"]) != (board_protocol["sha256"], board_protocol["version"]):
            problems.append(f"protocol {p['name']!r} sha256 {p['sha256'][:16]}... (version {p['version']}) is not the board's "
                            f"{board_protocol['sha256'][:16]}... (version {board_protocol['version']}): the protocol file "
                            "differs from the board's; rerun with the board's protocol")
        elif p.get("definition") is not None and p["definition"] != board_protocol["definition"]:
            problems.append(f"protocol {p['name']!r}: the definition in the result is not the one its sha256 names")
        problems += _level_problems(result, board_protocol["levels"]) + number_problems(result)
    features = result["features"]
    fingerprint = features.get("fingerprint")
    if not isinstance(fingerprint, dict) or not fingerprint:
        problems.append("features.fingerprint is missing: the features that produced the numbers are unknown")
    elif sha256_json(fingerprint) != features["fingerprint_sha256"]:
        problems.append("features.fingerprint does not hash to features.fingerprint_sha256")
    if problems:
        raise BoardError(f"{source}: refused: " + "; ".join(problems))
    return result


def _entry_name(result: dict) -> str:
    return result_name(result)[:-5]


@contextlib.contextmanager
def _locked(board: Path):
    """One `add` at a time per board."""
    with open(board / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_ledger(board: Path) -> list[dict]:
    path = board / LEDGER
    if not path.exists():
        return []
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            raise BoardError(f"{path}:{number}: not a JSON line") from None
        if not (isinstance(entry, dict) and isinstance(entry.get("result"), str) and isinstance(entry.get("sha256"), str)):
            raise BoardError(f"{path}:{number}: a ledger line needs 'result' and 'sha256'")
        entries.append(entry)
    return entries


def _load_submission(path: Path, meta: dict) -> tuple[bytes, dict]:
    data, obj = read_result_bytes(path)
    return data, check_against_board(validate_result(obj, str(path)), meta, str(path))


def add_results(board: str | Path, files: list[str | Path], submitter: str, log=print) -> int:
    """Check every file, then keep them all, or none: a submission with one bad file adds nothing.
    Returns the number of results added (a file already on the board byte for byte is not added again)."""
    board = Path(board)
    paths = result_paths(files)
    meta = read_board(board)
    if not (_SUBMITTER.fullmatch(submitter) and submitter.strip()):
        raise BoardError(f"--submitter {submitter!r}: give a name of 1 to 100 characters on one line")
    if not paths:
        raise BoardError("no results files given")
    with _locked(board):
        ledger = {entry["result"]: entry["sha256"] for entry in read_ledger(board)}
        problems, accepted, batch = [], [], {}
        for source in map(Path, paths):
            try:
                data, result = _load_submission(source, meta)
            except ResultError as exc:
                problems.append(str(exc))
                continue
            name = _entry_name(result)
            rel = f"{RESULTS}/{name}/result.json"
            if name in batch:
                problems.append(f"{source}: the same protocol and system as {batch[name]}")
                continue
            batch[name] = source
            stored = board / rel
            if stored.exists():
                if stored.read_bytes() != data:
                    problems.append(f"{source}: refused: {rel} holds another result for protocol {result['protocol']['name']!r}, "
                                    f"{result['attributor']['id']} + {result['features']['extractor']}; a board keeps one")
                    continue
                if ledger.get(rel) == sha256_file(stored):
                    log(f"[board] {source.name}: already on the board ({rel})")
                    continue
            accepted.append((source, data, result, rel))
        if problems:
            raise BoardError(f"nothing added to {board}: " + "\n".join(problems))
        lines = (board / LEDGER).read_text(encoding="utf-8") if (board / LEDGER).exists() else ""
        for source, data, result, rel in accepted:
            entry_dir = (board / rel).parent
            for figure in sorted(result.get("figures", {}).values()):
                _copy_figure(source.parent, figure, entry_dir)
            with atomic_path(board / rel) as tmp:
                tmp.write_bytes(data)
            line = {"time": now_utc(), "submitter": submitter, "sourcetrace": __version__,
                    "command": result["provenance"].get("command"), "result": rel, "sha256": sha256_file(board / rel),
                    "submitted_as": source.name, "protocol": result["protocol"]["name"],
                    "attributor": result["attributor"]["id"], "extractor": result["features"]["extractor"]}
            lines += json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n"
            write_text_atomic(board / LEDGER, lines)
            log(f"[board] {source.name}: accepted as {rel}")
    return len(accepted)


def _copy_figure(results_dir: Path, rel: str, entry_dir: Path) -> None:
    """A figure the result links, kept at the same relative path beside it (images only, see figure_file)."""
    parts = PurePosixPath(rel).parts
    if PurePosixPath(rel).is_absolute() or ".." in parts or "\\" in rel:
        return
    src = figure_file(results_dir, rel)
    if src is not None:
        copy_file_atomic(src, entry_dir.joinpath(*parts))


def build_board(board: str | Path, out: str | Path, title: str = DEFAULT_TITLE) -> Path:
    """The leaderboard site of a board, after checking every result again and against its ledger line."""
    board = Path(board)
    meta = read_board(board)
    ledger = {entry["result"]: entry["sha256"] for entry in read_ledger(board)}
    files = sorted((board / RESULTS).glob("*/result.json"))
    if not files:
        raise BoardError(f"{board} has no results yet: add some with `sourcetrace leaderboard add RESULTS... --board {board}`")
    for path in files:
        check_against_board(load_result(path), meta, str(path))
        rel = path.relative_to(board).as_posix()
        if ledger.get(rel) != sha256_file(path):
            raise BoardError(f"{path}: not the file the ledger accepted (sha256 differs or no ledger line): "
                             "edited after submission? remove it and add it again")
    return build_leaderboard(files, out, title=title)
