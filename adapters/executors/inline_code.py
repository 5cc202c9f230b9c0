"""Where an interpreter in an argv reads code, so that no ``{args…}`` template lands there.

A filled template is always exactly one argument, but an argument an interpreter runs as
code (``sh -c "echo {args[x]}"``, ``python3 -c``, ``perl -e``, an awk program) turns a value
such as ``a; id > proof`` into a command. ``refuse_templates_in_code(argv, key)`` raises
``ConfigError`` when a template sits in the code of a recognised interpreter, in the
options before it, or in a command wrapper (``env``, ``nice``, ``timeout``, ``busybox``...)
in front of it. Templates after the code are data: positional parameters (``$1``,
``sys.argv[1]``, ``ARGV[0]``...), the safe form the error points to.

Recognised: the shells (``sh``, ``bash``, ``dash``, ``zsh``, ``ksh``, ``ash``, ``mksh``,
``yash``, ``fish``, ``csh``, ``tcsh``), ``python``/``pypy``, ``perl``, ``ruby``, ``node``,
``lua``/``luajit``, ``php``, ``awk`` (``gawk``, ``mawk``, ``nawk``), ``sed``, ``Rscript``,
``tclsh``, ``expect``, ``osascript``, ``pwsh``, versioned names such as ``python3.11``
included. Perl with ``-n``, ``-p`` or ``-i`` opens its operands with the two-argument
``open`` (``"id|"`` runs ``id``), so every argument is code there.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from execution_ledger.domain.errors import ConfigError

SHELL_HINT = (
    'pass values as positional parameters: ["/bin/sh", "-c", "echo \\"$1\\"", "_", "{args[x]}"]'
)


@dataclass(frozen=True)
class Interpreter:
    """How one interpreter reads its argv: options, and which values and operands are code."""

    hint: str
    takes_value: frozenset[str] = frozenset()  # the next element, or the rest of a -cluster
    code_options: frozenset[str] = frozenset()  # of those, options whose value is code
    stops_options: frozenset[str] = frozenset()  # python -c / -m: what follows is data
    rest_of_cluster: frozenset[str] = frozenset()  # take the rest of their cluster only
    script_after_code: bool = False  # the first operand is code even after a code option
    all_code_with: frozenset[str] = frozenset()  # perl -n/-p/-i: operands opened as code
    plus_options: bool = False  # shells: "+o name" is an option too


def _names(*names: str) -> frozenset[str]:
    return frozenset(names)


_SHELL = Interpreter(
    hint=SHELL_HINT,
    takes_value=_names("-o", "-O", "--rcfile", "--init-file", "-C", "--init-command"),
    code_options=_names("-C", "--init-command"),
    script_after_code=True,
    plus_options=True,
)
INTERPRETERS: dict[str, Interpreter] = {
    **dict.fromkeys(
        ("sh", "bash", "rbash", "dash", "zsh", "ksh", "mksh", "lksh", "ash", "yash", "posh"),
        _SHELL,
    ),
    **dict.fromkeys(("fish", "csh", "tcsh"), _SHELL),
    "python": Interpreter(
        hint='read values from sys.argv: ["python3", "-c", "import sys; print(sys.argv[1])", '
        '"{args[x]}"]',
        takes_value=_names("-c", "-m", "-W", "-X", "--check-hash-based-pycs"),
        code_options=_names("-c", "-m"),
        stops_options=_names("-c", "-m"),
    ),
    "perl": Interpreter(
        hint='read values from @ARGV: ["perl", "-e", "print $ARGV[0]", "{args[x]}"] '
        "(without -n, -p or -i)",
        takes_value=_names("-e", "-E", "-I", "-M", "-m"),
        code_options=_names("-e", "-E", "-M", "-m"),
        rest_of_cluster=_names("-x", "-i", "-0", "-l", "-F", "-C", "-d", "-D"),
        all_code_with=_names("-n", "-p", "-i"),
    ),
    "ruby": Interpreter(
        hint='read values from ARGV: ["ruby", "-e", "puts ARGV[0]", "{args[x]}"]',
        takes_value=_names("-e", "-r", "-I", "-C", "-E", "--encoding"),
        code_options=_names("-e", "-r"),
        rest_of_cluster=_names("-x", "-i", "-0", "-l", "-F", "-K", "-T", "-W"),
    ),
    "node": Interpreter(
        hint='read values from process.argv: ["node", "-e", "console.log(process.argv[1])", '
        '"{args[x]}"]',
        takes_value=_names(
            *("-e", "--eval", "-p", "--print", "-r", "--require", "--import", "--loader"),
            *("--experimental-loader", "--input-type", "-C", "--conditions"),
        ),
        code_options=_names("-e", "--eval", "-p", "--print", "-r", "--require", "--import"),
    ),
    "lua": Interpreter(
        hint='use a script file and read arg[1]: ["lua", "/path/script.lua", "{args[x]}"]',
        takes_value=_names("-e", "-l"),
        code_options=_names("-e", "-l"),
        script_after_code=True,
    ),
    "php": Interpreter(
        hint='read values from $argv: ["php", "-r", "echo $argv[1];", "{args[x]}"]',
        takes_value=_names("-r", "-B", "-R", "-F", "-E", "-d", "-c", "-f", "-z", "-t", "-S"),
        code_options=_names("-r", "-B", "-R", "-F", "-E", "-d", "-f"),
    ),
    "awk": Interpreter(
        hint='read values from ARGV in a BEGIN-only program: ["awk", "BEGIN {{ print ARGV[1] }}", '
        '"{args[x]}"]',
        takes_value=_names(
            *("-f", "-v", "-F", "-e", "-i", "-l", "-E", "--file", "--assign"),
            *("--field-separator", "--source", "--include", "--load", "--exec"),
        ),
        code_options=_names("-f", "-e", "-i", "-l", "-E", "--file", "--source", "--include"),
    ),
    "sed": Interpreter(
        hint="a sed script must be literal: give the value as input or as a file operand",
        takes_value=_names("-e", "-f", "-l", "--expression", "--file", "--line-length"),
        code_options=_names("-e", "-f", "--expression", "--file"),
        rest_of_cluster=_names("-i"),
    ),
    "Rscript": Interpreter(
        hint='read values with commandArgs(trailingOnly = TRUE): ["Rscript", "-e", '
        '"cat(commandArgs(TRUE)[1])", "{args[x]}"]',
        takes_value=_names("-e"),
        code_options=_names("-e"),
    ),
    "tclsh": Interpreter(hint="use a script file and read $argv", script_after_code=True),
    "expect": Interpreter(
        hint="use a script file and read $argv",
        takes_value=_names("-c", "-f"),
        code_options=_names("-c", "-f"),
        script_after_code=True,
    ),
    "osascript": Interpreter(
        hint="use a script file and read the run handler's argv",
        takes_value=_names("-e", "-l"),
        code_options=_names("-e"),
    ),
    "pwsh": Interpreter(
        hint="use a script file (-File) and read $args",
        takes_value=_names("-c", "-Command", "-command", "-e", "-EncodedCommand"),
        code_options=_names("-c", "-Command", "-command", "-e", "-EncodedCommand"),
        all_code_with=_names("-c", "-Command", "-command"),
    ),
}
_ALIASES = {
    "pypy": "python", "nodejs": "node", "luajit": "lua", "gawk": "awk", "mawk": "awk",
    "nawk": "awk", "original-awk": "awk", "gsed": "sed", "wish": "tclsh", "powershell": "pwsh",
    "ksh93": "ksh",
}  # fmt: skip
# Commands that run the command named after their own options and operands.
WRAPPERS: dict[str, tuple[frozenset[str], int]] = {  # options taking a value, operands
    "env": (_names("-u", "--unset", "-C", "--chdir"), 0),
    "nice": (_names("-n", "--adjustment"), 0),
    "nohup": (frozenset(), 0),
    "setsid": (frozenset(), 0),
    "timeout": (_names("-s", "--signal", "-k", "--kill-after"), 1),
    "stdbuf": (_names("-i", "-o", "-e", "--input", "--output", "--error"), 0),
    "ionice": (_names("-c", "--class", "-n", "--classdata"), 0),
    "time": (_names("-f", "--format", "-o", "--output"), 0),
    "sudo": (_names("-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U"), 0),
    "doas": (_names("-u", "-C"), 0),
    "busybox": (frozenset(), 0),
}
_VERSIONED = re.compile(r"(?P<name>[A-Za-z][A-Za-z-]*?)-?[0-9][0-9.]*")


def refuse_templates_in_code(argv: Sequence[str], key: str) -> None:
    """Raise ``ConfigError`` at ``(key, index)`` for a template where an interpreter reads code."""
    start, name = _command_start(argv, key)
    interpreter = INTERPRETERS.get(_canonical(name))
    if interpreter is None:
        return
    extent = _code_extent(argv, start + 1, interpreter)
    for index in range(start + 1, extent + 1):
        if has_template(argv[index]):
            raise ConfigError(
                f"a template in the code or options of {argv[start]} would run a task's "
                f"args as code; {interpreter.hint}",
                (key, str(index)),
            )


def has_template(item: str) -> bool:
    try:
        return any(field is not None for _, field, _, _ in string.Formatter().parse(item))
    except ValueError:
        return True


def _command_start(argv: Sequence[str], key: str) -> tuple[int, str]:
    """The index and base name of the command a chain of wrappers finally runs; a template
    in a wrapper's options or in the name of the command it runs is refused."""
    index = 0
    while index < len(argv):
        name = os.path.basename(argv[index])
        wrapper = WRAPPERS.get(name)
        if wrapper is None:
            return index, name
        following = _after_wrapper(argv, index, name, wrapper)
        split = name == "env" and any(_splits(item) for item in argv[index + 1 : following])
        for position in range(index + 1, min(following + 1, len(argv))):
            if has_template(argv[position]) or (split and any(map(has_template, argv))):
                raise ConfigError(
                    f"{argv[index]} runs the command after it: its options and that command "
                    "must be literal (and env -S takes no templates anywhere)",
                    (key, str(position)),
                )
        index = following
    return index, ""


def _after_wrapper(
    argv: Sequence[str], index: int, name: str, wrapper: tuple[frozenset[str], int]
) -> int:
    with_value, operands = wrapper
    position = index + 1
    while position < len(argv):
        item = argv[position]
        if item == "--":
            position += 1
            break
        if name == "env" and "=" in item and not item.startswith("-"):
            position += 1
            continue
        if not item.startswith("-") or item == "-":
            break
        option = item.split("=", 1)[0]
        attached = "=" in item or (not item.startswith("--") and len(item) > 2)
        position += 1 if attached or option not in with_value else 2
    return position + operands


def _splits(item: str) -> bool:
    return item.startswith(("-S", "--split-string")) or (
        item.startswith("-") and not item.startswith("--") and "S" in item
    )


def _canonical(name: str) -> str:
    if name.endswith(".exe"):
        name = name[:-4]
    if name not in INTERPRETERS and (match := _VERSIONED.fullmatch(name)):
        name = match.group("name")
    return _ALIASES.get(name, name)


def _code_extent(argv: Sequence[str], start: int, interpreter: Interpreter) -> int:
    """The index of the last argument that is code, or an option of the interpreter."""
    index, last_code, seen = start, None, set()
    while index < len(argv):
        item = argv[index]
        if item == "--":
            index += 1
            break
        if not _is_option(item, interpreter):
            break
        following, names = _option(argv, index, interpreter)
        seen |= names
        if names & interpreter.code_options:
            last_code = following - 1
        if names & interpreter.stops_options:
            return following - 1
        index = following
    if seen & interpreter.all_code_with:
        return len(argv) - 1
    if last_code is None or interpreter.script_after_code:
        return min(index, len(argv) - 1)  # the first operand: a script, a program, code
    return index - 1


def _is_option(item: str, interpreter: Interpreter) -> bool:
    if len(item) < 2:
        return False
    return item[0] == "-" or (interpreter.plus_options and item[0] == "+")


def _option(argv: Sequence[str], index: int, interpreter: Interpreter) -> tuple[int, set[str]]:
    """The index after the option at ``index`` (and its value), and the options it holds."""
    item = argv[index]
    long_name = item.split("=", 1)[0]
    if item.startswith("--") or (len(item) > 2 and long_name in interpreter.takes_value):
        name, equals, _value = item.partition("=")
        needs_next = name in interpreter.takes_value and not equals
        return index + (2 if needs_next else 1), {name}
    names: set[str] = set()
    for position, letter in enumerate(item[1:], start=1):
        name = f"-{letter}"
        names.add(name)
        if name in interpreter.rest_of_cluster:
            return index + 1, names
        if name in interpreter.takes_value:
            attached = position < len(item) - 1
            return index + (1 if attached else 2), names
    return index + 1, names
