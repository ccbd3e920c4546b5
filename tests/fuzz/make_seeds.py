#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/*): valid and near-valid
frames of docs/wire-protocol.md, so the fuzzers start from the protocol's shapes."""
import os
import struct

here = os.path.dirname(os.path.abspath(__file__))


def req(op, tag=1, handle=0, offset=0, length=0, payload=b"", flags=0, reserved=0):
    return struct.pack("<BBHIQQII", op, flags, reserved, handle, tag, offset, length,
                       len(payload)) + payload


def hello(name=b"tux", platform=b"Linux 6.1  LP64   little endian", mode=0, session=0,
          vmin=1, vmax=1):
    return struct.pack("<HHHH", vmin, vmax, mode, len(name)) + bytes(range(32)) + \
        struct.pack("<QH", session, len(platform)) + name + platform


def write(dirname, name, data):
    d = os.path.join(here, "corpus", dirname)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


seeds = {
    "hello_tux": req(1, payload=hello()),
    "hello_unknown": req(1, payload=hello(b"nobody")),
    "hello_join": req(1, payload=hello(mode=1, session=12345)),
    "hello_version": req(1, payload=hello(vmin=2, vmax=3)),
    "hello_then_auth": req(1, payload=hello()) + req(2, tag=2, payload=bytes(32)),
    "hello_oversized": req(1, payload=b"a" * 513),
    "read_first": req(0x20, length=4096),
    "list_first": req(0x10),
    "auth_first": req(2, payload=bytes(32)),
    "two_hellos": req(1, payload=hello()) * 2,
    "truncated": req(1, payload=hello())[:40],
}
for name, data in seeds.items():
    write("handshake", name, data)

write("wire", "hello", hello())
write("wire", "list", struct.pack("<I", 2) + struct.pack("<QIHH", 1 << 30, 512, 0, 4) + b"vol1" +
      struct.pack("<QIHH", 1 << 20, 512, 1, 2) + b"v2")
write("wire", "open", struct.pack("<HH", 1, 7) + b"eisberg")
write("wire", "open_reply", struct.pack("<IIQII", 1, 512, 1 << 30, 0x1e, 0))
write("wire", "auth_ok", bytes(32) + struct.pack("<QIIIII", 7, 1, 1 << 20, 256, 1000, 0))
write("wire", "read_header", req(0x20, tag=9, handle=1, offset=4096, length=4096))
write("wire", "write_header", req(0x21, tag=9, handle=1, offset=4096, length=512, flags=1,
                                  payload=b"x" * 512))
write("wire", "wrap", req(0x20, offset=(1 << 64) - 512, length=1024))
