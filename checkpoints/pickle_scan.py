"""Reading a pickle without running it: a walk over its opcodes with a symbolic stack.

`pickletools.genops` yields the opcodes; nothing is imported or called. The walk records the
globals the pickle would call, the strings it holds (a state dict's keys) and torch's persistent
storage ids, which is all `official.py` needs to tell what a checkpoint file is and whether it may
be loaded.
"""

from __future__ import annotations

import pickletools
from dataclasses import dataclass, field

_MARK = object()
_STRINGS = {"UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "STRING", "BINSTRING", "SHORT_BINSTRING"}


@dataclass
class PickleScan:
    """What one or more pickles hold, gathered by `scan_pickle`."""

    globals: set[str] = field(default_factory=set)
    strings: set[str] = field(default_factory=set)
    storages: dict[str, tuple[str, int]] = field(default_factory=dict)  # key -> (storage type, numel)


def scan_pickle(stream, scan: PickleScan) -> None:
    """Walk one pickle's opcodes with a symbolic stack: records the globals it names, its strings
    and torch's persistent storage ids; raises ValueError where the stream ends before STOP."""
    stack: list = []
    memo: dict = {}
    for opcode, arg, _ in pickletools.genops(stream):
        name = opcode.name
        if name in ("GLOBAL", "INST"):
            module, _, attr = arg.partition(" ")
            glob = _global(module, attr)
            scan.globals.add(glob)
            if name == "INST":
                _pop_mark(stack)
            stack.append(glob)
        elif name == "STACK_GLOBAL":
            attr, module = stack.pop(), stack.pop()
            glob = _global(module, attr) if isinstance(module, str) and isinstance(attr, str) else "?.?"
            scan.globals.add(glob)
            stack.append(glob)
        elif name in ("EXT1", "EXT2", "EXT4"):
            scan.globals.add(f"copyreg extension {arg}")
            stack.append(None)
        elif name in _STRINGS:
            value = arg if isinstance(arg, str) else str(arg)
            scan.strings.add(value)
            stack.append(value)
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[arg] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            stack.append(memo.get(arg))
        elif name == "MARK":
            stack.append(_MARK)
        elif name == "TUPLE":
            stack.append(tuple(_pop_mark(stack)))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = stack[-n:]
            del stack[-n:]
            stack.append(tuple(items))
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name in ("BINPERSID", "PERSID"):
            pid = stack.pop() if name == "BINPERSID" else arg
            if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
                scan.storages[str(pid[2])] = (str(pid[1]), pid[4] if isinstance(pid[4], int) else -1)
            stack.append(None)
        elif name == "DUP":
            stack.append(stack[-1])
        elif name == "NONE":
            stack.append(None)
        elif name in ("NEWTRUE", "NEWFALSE"):
            stack.append(name == "NEWTRUE")
        elif name in ("PROTO", "FRAME", "STOP"):
            continue
        elif opcode.stack_after == [pickletools.anyobject] and not opcode.stack_before and arg is not None:
            stack.append(arg)  # ints, floats, bytes
        else:  # everything else only by its stack effect
            before = opcode.stack_before
            if pickletools.markobject in before:
                _pop_mark(stack)
                count = before.index(pickletools.markobject)
            else:
                count = len(before)
            if count:
                del stack[-count:]
            stack.extend([None] * len(opcode.stack_after))


def _global(module: str, attr: str) -> str:
    """module.name as Python 3 resolves it (protocol 2 pickles name `__builtin__`, `copy_reg`)."""
    module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)
    return f"{module}.{attr}"


def _pop_mark(stack: list) -> list:
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is _MARK:
            items = stack[i + 1:]
            del stack[i:]
            return items
    raise ValueError("MARK missing")
