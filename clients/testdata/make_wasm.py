#!/usr/bin/env python3
"""Assembles the WebAssembly modules the client tests submit, byte by byte, with no toolchain.

    python3 clients/testdata/make_wasm.py          # rewrites sum.wasm and spin.wasm beside it

* ``sum.wasm`` behaves as ``cli/wasm/sum.wat``: a WASI preview1 command that reads stdin (up to
  60000 bytes), sums every run of decimal digits in it and prints ``{"sum":N}``.
* ``spin.wasm`` behaves as ``cli/wasm/spin.wat``: an infinite loop, which the sandbox must stop
  (``out_of_fuel``).

The repository's WAT files need a WAT compiler (the ``wat`` crate, or ``wat2wasm``); these are
encoded here instead so that the Python and JavaScript tests need neither. The Python tests check
that the committed ``.wasm`` files are what this script writes, and the JavaScript tests read
them.
"""
from __future__ import annotations

import os
import sys

I32, I64 = 0x7F, 0x7E
EMPTY = 0x40  # block type of a block with no result


def uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def sleb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if (n == 0 and not b & 0x40) or (n == -1 and b & 0x40):
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def vec(items: list[bytes]) -> bytes:
    return uleb(len(items)) + b"".join(items)


def name(s: str) -> bytes:
    return uleb(len(s)) + s.encode()


def section(sid: int, body: bytes) -> bytes:
    return bytes([sid]) + uleb(len(body)) + body


class Code:
    """A function body as a list of instructions, with one method per opcode used."""

    def __init__(self) -> None:
        self.b = bytearray()

    def op(self, *bs: int) -> Code:
        self.b.extend(bs)
        return self

    # Control.
    def block(self) -> Code:
        return self.op(0x02, EMPTY)

    def loop(self) -> Code:
        return self.op(0x03, EMPTY)

    def if_(self) -> Code:
        return self.op(0x04, EMPTY)

    def else_(self) -> Code:
        return self.op(0x05)

    def end(self) -> Code:
        return self.op(0x0B)

    def br(self, depth: int) -> Code:
        return self.op(0x0C, depth)

    def br_if(self, depth: int) -> Code:
        return self.op(0x0D, depth)

    def call(self, func: int) -> Code:
        return self.op(0x10, func)

    # Locals and constants.
    def get(self, i: int) -> Code:
        return self.op(0x20, i)

    def set(self, i: int) -> Code:
        return self.op(0x21, i)

    def tee(self, i: int) -> Code:
        return self.op(0x22, i)

    def i32(self, v: int) -> Code:
        self.b.append(0x41)
        self.b.extend(sleb(v))
        return self

    def i64(self, v: int) -> Code:
        self.b.append(0x42)
        self.b.extend(sleb(v))
        return self

    # Memory (alignment, offset 0).
    def load(self) -> Code:
        return self.op(0x28, 2, 0)

    def load8_u(self) -> Code:
        return self.op(0x2D, 0, 0)

    def store(self) -> Code:
        return self.op(0x36, 2, 0)

    def store8(self) -> Code:
        return self.op(0x3A, 0, 0)


# Opcodes without immediates.
I32_EQZ, I32_LE_U, I32_GE_U, I64_NE = 0x45, 0x4D, 0x4F, 0x52
I32_ADD, I32_SUB, I32_AND = 0x6A, 0x6B, 0x71
I64_ADD, I64_MUL, I64_DIV_U, I64_REM_U = 0x7C, 0x7E, 0x80, 0x82
I32_WRAP_I64, I64_EXTEND_I32_U = 0xA7, 0xAD


def module(types: list[bytes], imports: list[bytes], funcs: list[int], exports: list[bytes],
           bodies: list[bytes]) -> bytes:
    return (
        b"\0asm" + (1).to_bytes(4, "little")
        + section(1, vec(types))
        + (section(2, vec(imports)) if imports else b"")
        + section(3, vec([uleb(t) for t in funcs]))
        + section(5, vec([b"\x00" + uleb(1)]))  # one memory of one page
        + section(7, vec(exports))
        + section(10, vec([uleb(len(b)) + b for b in bodies]))
    )


def body(locals_: list[tuple[int, int]], code: Code) -> bytes:
    return vec([uleb(n) + bytes([t]) for n, t in locals_]) + bytes(code.b) + b"\x0b"


def func_type(params: list[int], results: list[int]) -> bytes:
    return b"\x60" + vec([bytes([p]) for p in params]) + vec([bytes([r]) for r in results])


def sum_module() -> bytes:
    fd_read, fd_write, start = 0, 1, 2
    # Locals: n i c len in p (i32), sum cur (i64), w (i32).
    n, i, c, length, inside, p, total, cur, w = range(9)
    k = Code()
    # Read all of stdin into 1024.. (iovec at 0, count read at 8).
    k.block().loop()
    k.i32(0).i32(1024).get(length).op(I32_ADD).store()
    k.i32(4).i32(60000).get(length).op(I32_SUB).store()
    k.i32(0).i32(0).i32(1).i32(8).call(fd_read).br_if(1)
    k.i32(8).load().tee(n).op(I32_EQZ).br_if(1)
    k.get(length).get(n).op(I32_ADD).set(length)
    k.br(0).end().end()
    # Scan for runs of digits.
    k.block().loop()
    k.get(i).get(length).op(I32_GE_U).br_if(1)
    k.i32(1024).get(i).op(I32_ADD).load8_u().set(c)
    k.get(c).i32(48).op(I32_GE_U).get(c).i32(57).op(I32_LE_U).op(I32_AND)
    k.if_()
    k.get(cur).i64(10).op(I64_MUL).get(c).i32(48).op(I32_SUB).op(I64_EXTEND_I32_U).op(I64_ADD)
    k.set(cur).i32(1).set(inside)
    k.else_()
    k.get(inside).if_()
    k.get(total).get(cur).op(I64_ADD).set(total).i64(0).set(cur).i32(0).set(inside)
    k.end()
    k.end()
    k.get(i).i32(1).op(I32_ADD).set(i)
    k.br(0).end().end()
    k.get(total).get(cur).op(I64_ADD).set(total)
    # '}' at 320, the digits backwards before it, then the prefix before them.
    k.i32(320).i32(ord("}")).store8()
    k.i32(320).set(p)
    k.loop()
    k.get(p).i32(1).op(I32_SUB).set(p)
    k.get(p).get(total).i64(10).op(I64_REM_U).op(I32_WRAP_I64).i32(48).op(I32_ADD).store8()
    k.get(total).i64(10).op(I64_DIV_U).tee(total).i64(0).op(I64_NE).br_if(0)
    k.end()
    prefix = b'{"sum":'
    for j, ch in enumerate(prefix):
        k.get(p).i32(len(prefix) - j).op(I32_SUB).i32(ch).store8()
    k.get(p).i32(len(prefix)).op(I32_SUB).set(p)
    # Write [p, 321) to stdout, looping on short writes (iovec at 16, count written at 40).
    k.block().loop()
    k.i32(16).get(p).store()
    k.i32(20).i32(321).get(p).op(I32_SUB).store()
    k.i32(20).load().op(I32_EQZ).br_if(1)
    k.i32(1).i32(16).i32(1).i32(40).call(fd_write).br_if(1)
    k.i32(40).load().tee(w).op(I32_EQZ).br_if(1)
    k.get(p).get(w).op(I32_ADD).set(p)
    k.br(0).end().end()
    wasi = "wasi_snapshot_preview1"
    return module(
        types=[func_type([I32] * 4, [I32]), func_type([], [])],
        imports=[name(wasi) + name("fd_read") + b"\x00\x00",
                 name(wasi) + name("fd_write") + b"\x00\x00"],
        funcs=[1],
        exports=[name("memory") + b"\x02\x00", name("_start") + b"\x00" + uleb(start)],
        bodies=[body([(6, I32), (2, I64), (1, I32)], k)],
    )


def spin_module() -> bytes:
    k = Code().loop().br(0).end()
    return module(
        types=[func_type([], [])],
        imports=[],
        funcs=[0],
        exports=[name("memory") + b"\x02\x00", name("_start") + b"\x00\x00"],
        bodies=[body([], k)],
    )


MODULES = {"sum.wasm": sum_module, "spin.wasm": spin_module}


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    for file, make in MODULES.items():
        with open(os.path.join(here, file), "wb") as f:
            f.write(make())
        print(f"wrote {file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
