"""Showing pickled task arguments and results without importing or running anything.

A pickle is a program for a small stack machine, and :class:`pickle.Unpickler` runs it: it
imports the modules it names and calls what it finds there.  Even one that is made to return
placeholders for every global still builds real containers -- hashing a few hundred bytes of
shared nested tuples as a dict key takes longer than the age of the universe -- and every
allowed class is a way to allocate without bound (``set(range(10**10))`` is 68 bytes).

So this module runs the program itself, with :mod:`pickletools`' parser for the operands, and
builds only inert values: lists and tuples, :class:`_Pairs` for dicts and :class:`_Set` for
sets (nothing is hashed), and :class:`_Made` for whatever the pickle would have imported,
called or constructed -- shown as ``module.func(args)`` or ``<module.Class field=value>``.
Every step is bounded: the number of operations, the length of the output, the depth shown,
and the digits of integers.  A handful of plain stdlib values (dates, times, UUIDs, decimals,
complex numbers) are rebuilt from checked primitive fields so they read as usual.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Optional

__all__ = ["Shown", "Limits", "show_value", "show_call", "LIMITS", "FULL"]


@dataclass(frozen=True)
class Limits:
    """How much of a pickle is read and shown."""

    ops: int = 300_000          #: pickle operations run before giving up on the value
    chars: int = 500            #: characters of output, then it is cut
    depth: int = 24             #: nesting levels shown; deeper ones show as ``...``
    int_bits: int = 8192        #: larger integers show as ``<int of N bits>``


LIMITS = Limits()
FULL = Limits(ops=3_000_000, chars=250_000, depth=200)


@dataclass(frozen=True)
class Shown:
    """A value as text, or why it cannot be shown (then ``text`` is None)."""

    text: Optional[str]
    error: Optional[str] = None
    truncated: bool = False     #: the text was cut at ``Limits.chars``


class Unshowable(Exception):
    """The pickle cannot be shown: malformed, or larger than the limits allow."""


# -- inert values -------------------------------------------------------------------------------

@dataclass(eq=False)
class _Global:
    module: str
    name: str


@dataclass(eq=False)
class _Made:
    """What the pickle would have built: ``callee(*args)`` (REDUCE) or ``cls.__new__`` (NEWOBJ,
    INST, OBJ), then given ``state`` (BUILD), list items (APPEND) and dict items (SETITEM)."""

    callee: Any
    args: tuple
    called: bool
    kwargs: Any = None
    state: Any = None
    items: list = field(default_factory=list)
    pairs: list = field(default_factory=list)


@dataclass(eq=False)
class _Pairs:
    """A dict, as its (key, value) pairs: building a real one would hash hostile keys."""

    pairs: list = field(default_factory=list)


@dataclass(eq=False)
class _Set:
    items: list = field(default_factory=list)
    frozen: bool = False


@dataclass(eq=False)
class _ByteArray:
    data: bytes


# -- running the pickle ---------------------------------------------------------------------------

def _run(blob: bytes, limits: Limits) -> Any:
    import pickletools  # lazily: ~20 ms to import, and only `show` needs it

    f = io.BytesIO(blob)
    stack: list[Any] = []
    marks: list[int] = []
    memo: dict[int, Any] = {}
    ops = pickletools.code2op
    proto = 0

    def pop_mark() -> list[Any]:
        if not marks:
            raise Unshowable("malformed pickle (no mark)")
        at = marks.pop()
        items = stack[at:]
        del stack[at:]
        return items

    def pop() -> Any:
        if not stack or (marks and len(stack) <= marks[-1]):
            raise Unshowable("malformed pickle (stack underflow)")
        return stack.pop()

    def top() -> Any:
        if not stack or (marks and len(stack) <= marks[-1]):
            raise Unshowable("malformed pickle (stack underflow)")
        return stack[-1]

    for _ in range(limits.ops):
        code = f.read(1)
        if not code:
            raise Unshowable("the pickle ends early")
        op = ops.get(code.decode("latin-1"))
        if op is None:
            raise Unshowable(f"unknown pickle opcode {code!r} at byte {f.tell() - 1}")
        name = op.name
        if name in ("INT", "LONG"):
            # pickletools would call int() on the whole line: quadratic in its length
            line = f.readline().rstrip(b"\n").rstrip(b"L")
            if len(line) > 2000:
                stack.append(_Global("", f"<int of {len(line)} digits>"))
                continue
            try:
                value: Any = int(line)
            except ValueError:
                raise Unshowable(f"malformed pickle ({name} {line[:20]!r})") from None
            stack.append(value if name == "LONG" or line not in (b"00", b"01") else line == b"01")
            continue
        try:
            arg = None if op.arg is None else op.arg.reader(f)
        except ValueError as exc:
            raise Unshowable(f"malformed pickle ({exc})") from None

        if name == "STOP":
            if len(stack) != 1 or marks:
                raise Unshowable("malformed pickle (stack at STOP)")
            return stack[0]
        if name == "PROTO":
            proto = int(arg)
            continue
        if name == "FRAME":
            continue
        if name in ("BININT", "BININT1", "BININT2", "LONG1", "LONG4", "FLOAT", "BINFLOAT", "STRING",
                    "BINSTRING", "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
                    "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"):
            stack.append(arg)
        elif name == "BYTEARRAY8":
            stack.append(_ByteArray(bytes(arg)))
        elif name == "NONE":
            stack.append(None)
        elif name in ("NEWTRUE", "NEWFALSE"):
            stack.append(name == "NEWTRUE")
        elif name == "EMPTY_LIST":
            stack.append([])
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name == "EMPTY_DICT":
            stack.append(_Pairs())
        elif name == "EMPTY_SET":
            stack.append(_Set())
        elif name == "MARK":
            marks.append(len(stack))
        elif name in ("POP",):
            if marks and len(stack) == marks[-1]:
                marks.pop()
            else:
                pop()
        elif name == "POP_MARK":
            pop_mark()
        elif name == "DUP":
            stack.append(top())
        elif name == "APPEND":
            item = pop()
            _extend(top(), [item])
        elif name == "APPENDS":
            items = pop_mark()
            _extend(top(), items)
        elif name == "LIST":
            stack.append(pop_mark())
        elif name == "TUPLE":
            stack.append(tuple(pop_mark()))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = [pop() for _ in range(n)][::-1]
            stack.append(tuple(items))
        elif name == "DICT":
            items = pop_mark()
            stack.append(_Pairs(list(zip(items[::2], items[1::2]))))
        elif name == "SETITEM":
            value = pop()
            key = pop()
            _set_items(top(), [key, value])
        elif name == "SETITEMS":
            items = pop_mark()
            _set_items(top(), items)
        elif name == "ADDITEMS":
            items = pop_mark()
            target = top()
            if not isinstance(target, _Set):
                raise Unshowable("malformed pickle (ADDITEMS to a non-set)")
            target.items.extend(items)
        elif name == "FROZENSET":
            stack.append(_Set(pop_mark(), frozen=True))
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = top()
        elif name == "MEMOIZE":
            memo[len(memo)] = top()
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            try:
                stack.append(memo[int(arg)])
            except KeyError:
                raise Unshowable(f"malformed pickle (memo {arg} is empty)") from None
        elif name in ("GLOBAL", "INST"):
            module, _, qualname = str(arg).partition(" ")
            g = _global(module, qualname, proto)
            stack.append(g if name == "GLOBAL" else _Made(g, tuple(pop_mark()), called=False))
        elif name == "STACK_GLOBAL":
            qualname, module = pop(), pop()
            if not (isinstance(module, str) and isinstance(qualname, str)):
                raise Unshowable("malformed pickle (STACK_GLOBAL of non-strings)")
            stack.append(_global(module, qualname, proto))
        elif name in ("EXT1", "EXT2", "EXT4"):
            stack.append(_Global("copyreg", f"<extension {arg}>"))
        elif name == "REDUCE":
            args = pop()
            callee = pop()
            stack.append(_Made(callee, args if isinstance(args, tuple) else (args,), called=True))
        elif name == "NEWOBJ":
            args = pop()
            cls = pop()
            stack.append(_Made(cls, args if isinstance(args, tuple) else (args,), called=False))
        elif name == "NEWOBJ_EX":
            kwargs, args, cls = pop(), pop(), pop()
            stack.append(_Made(cls, args if isinstance(args, tuple) else (args,), called=False,
                               kwargs=kwargs))
        elif name == "OBJ":
            items = pop_mark()
            if not items:
                raise Unshowable("malformed pickle (OBJ without a class)")
            stack.append(_Made(items[0], tuple(items[1:]), called=False))
        elif name == "BUILD":
            state = pop()
            target = top()
            if not isinstance(target, _Made):
                raise Unshowable("malformed pickle (BUILD on a plain value)")
            target.state = state
        elif name in ("PERSID", "BINPERSID"):
            raise Unshowable("the pickle refers to objects stored elsewhere (persistent ids)")
        elif name in ("NEXT_BUFFER", "READONLY_BUFFER"):
            raise Unshowable("the pickle refers to out-of-band buffers")
        else:  # pragma: no cover - every opcode of pickletools is handled above
            raise Unshowable(f"unsupported pickle opcode {name}")
    raise Unshowable(f"more than {limits.ops} pickle operations")


def _global(module: str, name: str, proto: int) -> _Global:
    """A global as Python 3 names it: pickles of protocol < 3 use Python 2's names
    (``__builtin__.set``), which the real unpickler maps too."""
    if proto < 3:
        import _compat_pickle
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return _Global(module, name)


def _extend(target: Any, items: list) -> None:
    if isinstance(target, list):
        target.extend(items)
    elif isinstance(target, _Made):
        target.items.extend(items)
    else:
        raise Unshowable("malformed pickle (APPEND to a non-list)")


def _set_items(target: Any, items: list) -> None:
    pairs = list(zip(items[::2], items[1::2]))
    if isinstance(target, _Pairs):
        target.pairs.extend(pairs)
    elif isinstance(target, _Made):
        target.pairs.extend(pairs)
    else:
        raise Unshowable("malformed pickle (SETITEM on a non-dict)")


# -- plain stdlib values, rebuilt from checked fields ---------------------------------------------

class _NotPlain(Exception):
    pass


def _plain(value: Any) -> Any:
    """The real stdlib object a :class:`_Made` stands for, if it is one of the few whose
    fields are checked here to be small primitives; raises _NotPlain otherwise."""
    if not isinstance(value, _Made) or not isinstance(value.callee, _Global):
        raise _NotPlain
    key = (value.callee.module, value.callee.name)
    args = value.args
    if value.items or value.pairs or value.kwargs is not None:
        raise _NotPlain
    if key == ("_codecs", "encode") and value.called:
        # protocol < 3 pickles bytes as _codecs.encode(text, 'latin1')
        if len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
            return _checked(str.encode, args[0], "latin-1")
        raise _NotPlain
    if key in (("builtins", "bytes"), ("builtins", "bytearray")) and value.called:
        # never bytearray(n): n bytes of nothing, allocated
        if args == () or (len(args) == 1 and isinstance(args[0], bytes)):
            return (bytes if key[1] == "bytes" else bytearray)(*args)
        if len(args) == 1 and isinstance(args[0], _Made):
            inner = _plain(args[0])
            if isinstance(inner, bytes):
                return (bytes if key[1] == "bytes" else bytearray)(inner)
        raise _NotPlain
    import datetime
    if key in (("datetime", "datetime"), ("datetime", "time"), ("datetime", "date")) and value.called:
        if not args or len(args) > 2:
            raise _NotPlain
        state = args[0] if isinstance(args[0], bytes) else _plain(args[0])
        if not isinstance(state, bytes) or len(state) > 10:
            raise _NotPlain
        tz = () if len(args) == 1 else (_plain(args[1]),)
        cls = getattr(datetime, key[1])
        return _checked(cls, state, *tz)
    if key == ("datetime", "timedelta") and value.called:
        if len(args) != 3 or not all(isinstance(a, int) and abs(a) < 10 ** 10 for a in args):
            raise _NotPlain
        return _checked(datetime.timedelta, *args)
    if key == ("datetime", "timezone") and value.called:
        named = len(args) == 2 and isinstance(args[1], str) and len(args[1]) < 100
        if len(args) != 1 and not named:
            raise _NotPlain
        return _checked(datetime.timezone, _plain(args[0]), *args[1:])
    if key == ("decimal", "Decimal") and value.called:
        if len(args) != 1 or not isinstance(args[0], str) or len(args[0]) > 100:
            raise _NotPlain
        import decimal
        return _checked(decimal.Decimal, args[0])
    if key == ("builtins", "complex"):
        if len(args) != 2 or not all(isinstance(a, float) for a in args) or value.state is not None:
            raise _NotPlain
        return complex(*args)
    if key == ("uuid", "UUID") and not value.called and not args:
        state = value.state
        if isinstance(state, _Pairs):
            fields = {k: v for k, v in state.pairs if isinstance(k, str)}
            n = fields.get("int")
            if isinstance(n, int) and 0 <= n < 1 << 128:
                import uuid
                return uuid.UUID(int=n)
    raise _NotPlain


def _checked(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except (TypeError, ValueError, OverflowError):
        raise _NotPlain from None


def _is(value: Any, module: str, name: str) -> bool:
    return isinstance(value, _Global) and value.module == module and value.name == name


# -- showing --------------------------------------------------------------------------------------

class _Full(Exception):
    pass


class _Writer:
    """Writes the repr of an inert value, within a budget of characters and depth."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.parts: list[str] = []
        self.left = limits.chars
        self.deep = False
        self._path: set[int] = set()

    def put(self, text: str) -> None:
        if len(text) > self.left:
            self.parts.append(text[:self.left])
            self.left = 0
            raise _Full
        self.parts.append(text)
        self.left -= len(text)

    def value(self, v: Any, depth: int = 0) -> None:
        if v is None or isinstance(v, (bool, float)):
            self.put(repr(v))
        elif isinstance(v, int):
            self.put(repr(v) if v.bit_length() <= self.limits.int_bits else f"<int of {v.bit_length()} bits>")
        elif isinstance(v, (str, bytes)):
            # never repr() more than can be shown: the value may be megabytes long
            self.put(repr(v[:self.left + 2]))
            if len(v) > self.left + 2:
                raise _Full
        elif isinstance(v, _ByteArray):
            self.put("bytearray(")
            self.value(v.data, depth)
            self.put(")")
        elif isinstance(v, _Global):
            self.put(f"{v.module}.{v.name}" if v.module else v.name)
        elif depth >= self.limits.depth:
            self.deep = True
            self.put("...")
        elif id(v) in self._path:
            self.put({list: "[...]", tuple: "(...)", _Pairs: "{...}"}.get(type(v), "<...>"))
        else:
            self._path.add(id(v))
            try:
                self.container(v, depth + 1)
            finally:
                self._path.discard(id(v))

    def container(self, v: Any, depth: int) -> None:
        if isinstance(v, list):
            self.seq("[", v, "]", depth)
        elif isinstance(v, tuple):
            self.seq("(", v, ",)" if len(v) == 1 else ")", depth)
        elif isinstance(v, _Pairs):
            self.pairs("{", v.pairs, "}", depth)
        elif isinstance(v, _Set):
            if not v.items:
                self.put("frozenset()" if v.frozen else "set()")
            else:
                self.seq("frozenset({" if v.frozen else "{", v.items, "})" if v.frozen else "}", depth)
        elif isinstance(v, _Made):
            self.made(v, depth)
        else:  # pragma: no cover - _run builds nothing else
            self.put(f"<{type(v).__name__}>")

    def seq(self, open_: str, items: Any, close: str, depth: int) -> None:
        self.put(open_)
        for i, item in enumerate(items):
            if i:
                self.put(", ")
            self.value(item, depth)
        self.put(close)

    def pairs(self, open_: str, pairs: list, close: str, depth: int, sep: str = ": ") -> None:
        self.put(open_)
        for i, (k, v) in enumerate(pairs):
            if i:
                self.put(", ")
            if sep == "=":
                self.put(k)
            else:
                self.value(k, depth)
            self.put(sep)
            self.value(v, depth)
        self.put(close)

    def made(self, v: _Made, depth: int) -> None:
        if v.called and _is(v.callee, "copyreg", "_reconstructor") and len(v.args) == 3:
            # protocol 0/1: copyreg._reconstructor(cls, object, None) + BUILD is a plain instance
            v = _Made(v.args[0], (), called=False, state=v.state, items=v.items, pairs=v.pairs)
        try:
            self.put(repr(_plain(v)))
            return
        except _NotPlain:
            pass
        callee = v.callee
        plain_set = len(v.args) == 1 and isinstance(v.args[0], list) and not (v.items or v.pairs or v.state)
        is_set = _is(callee, "builtins", "set") or _is(callee, "builtins", "frozenset")
        if v.called and plain_set and is_set:
            # protocol < 4 pickles a set as set([items]): show it as one, never build it
            self.container(_Set(v.args[0], frozen=callee.name == "frozenset"), depth)
            return
        attribute = len(v.args) == 2 and isinstance(v.args[1], str)
        if v.called and _is(callee, "builtins", "getattr") and attribute:
            self.value(v.args[0], depth)          # e.g. zoneinfo.ZoneInfo._unpickle
            self.put("." + v.args[1])
        elif v.called:
            self.value(callee, depth)
            args: Any = v.args
            empty = not args or (isinstance(args[0], (tuple, list)) and not args[0])
            if (v.items or v.pairs) and empty and not (v.items and v.pairs):
                # OrderedDict(), deque((), 5) filled by APPENDS/SETITEMS: show them as the
                # constructor's first argument, as their reprs do
                filled = _Pairs(v.pairs) if v.pairs else v.items
                args = (filled, *args[1:])
                v = _Made(callee, args, called=True, state=v.state)
            self.seq("(", args, ")", depth)
        else:
            self.put("<")
            self.value(callee, depth)
            if v.args:
                self.put(" ")
                self.seq("", v.args, "", depth)
            state = v.state
            if isinstance(state, tuple) and len(state) == 2 and state[0] is None:
                state = state[1]                  # (None, slots): an object with __slots__
            if isinstance(state, _Pairs) and all(isinstance(k, str) for k, _ in state.pairs):
                if state.pairs:
                    self.put(" ")
                    self.pairs("", state.pairs, "", depth, sep="=")
            elif state is not None:
                self.put(" ")
                self.value(state, depth)
            self.put(">")
        self._extra(v, depth)

    def _extra(self, v: _Made, depth: int) -> None:
        if v.called and v.state is not None:
            self.put(" with state ")
            self.value(v.state, depth)
        if v.items:
            self.put(" + ")
            self.seq("[", v.items, "]", depth)
        if v.pairs:
            self.put(" + ")
            self.pairs("{", v.pairs, "}", depth)

    def text(self) -> str:
        return "".join(self.parts)


def _show(value: Any, limits: Limits) -> Shown:
    w = _Writer(limits)
    try:
        w.value(value)
    except _Full:
        return Shown(w.text() + "...", None, truncated=True)
    except RecursionError:
        return Shown(None, "cannot show it (nested too deeply)")
    text = w.text()
    if w.deep:
        text += f"  (nested deeper than {limits.depth} levels: shown as ...)"
    return Shown(text)


def _load(blob: bytes, limits: Limits) -> Any:
    try:
        return _run(blob, limits)
    except Unshowable as exc:
        raise Unshowable(f"cannot decode it ({exc})") from None
    except (EOFError, IndexError, TypeError, ValueError, OverflowError, MemoryError) as exc:
        raise Unshowable(f"cannot decode it ({exc.__class__.__name__}: {exc})") from None


def _inert(value: Any) -> Any:
    """A decoded JSON value (timewheel/serialize.py) as the writer shows it: dicts as
    :class:`_Pairs`, the encoded stdlib values by their repr."""
    if isinstance(value, list):
        return [_inert(v) for v in value]
    if isinstance(value, tuple):                # loads_call's (args, kwargs)
        return tuple(_inert(v) for v in value)
    if isinstance(value, dict):
        return _Pairs([(k, _inert(v)) for k, v in value.items()])
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    return _Global("", repr(value))         # a date, time, UUID or Decimal, built from checked text


def _json(decode: Any, blob: bytes) -> Any:
    """``decode(blob)`` (a decoder of timewheel/serialize.py) as inert values to show."""
    try:
        return _inert(decode(blob))
    except (ValueError, RecursionError) as exc:
        raise Unshowable(f"cannot decode its JSON ({exc})") from None


def show_value(blob: Optional[bytes], limits: Limits = LIMITS) -> Optional[Shown]:
    """The repr of a pickled or JSON value (a task's result), or why not; None when there is none."""
    if blob is None:
        return None
    if blob[:1] == b"{":
        from .serialize import loads_result
        try:
            return _show(_json(loads_result, blob), limits)
        except Unshowable as exc:
            return Shown(None, str(exc))
    try:
        value = _load(blob, limits)
    except Unshowable as exc:
        return Shown(None, str(exc))
    return _show(value, limits)


def show_call(payload: bytes, limits: Limits = LIMITS) -> tuple[Shown, Shown]:
    """(args, kwargs) of a task's pickled ``(args, kwargs)`` payload (``(args, kwargs, trace)``
    when it carries a trace context: records.call_of), or its JSON one (timewheel/serialize.py:
    read as JSON, never unpickled), each shown or why not."""
    if payload[:1] == b"{":
        from .serialize import loads_call
        try:
            args, kwargs = _json(loads_call, payload)
        except Unshowable as exc:
            failed = Shown(None, str(exc))
            return failed, failed
        return _show(tuple(args), limits), _show(kwargs, limits)
    try:
        value = _load(payload, limits)
    except Unshowable as exc:
        failed = Shown(None, str(exc))
        return failed, failed
    if not (isinstance(value, tuple) and len(value) in (2, 3) and isinstance(value[1], _Pairs)):
        failed = Shown(None, "unexpected payload shape (not an (args, kwargs) pair)")
        return failed, failed
    if not isinstance(value[0], (tuple, list)):
        failed = Shown(None, "unexpected payload shape (args are not a tuple)")
        return failed, failed
    return _show(tuple(value[0]), limits), _show(value[1], limits)
