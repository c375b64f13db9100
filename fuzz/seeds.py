#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (fuzz/corpus/<target>/): well-formed inputs that a
real guest or client would send, for libFuzzer to mutate from. Chain targets take the layout
fuzz/src/lib.rs describes: a 256-byte descriptor table, a head index, then the bytes placed
in guest memory at DATA (0x1000)."""
import json
import os
import struct

DATA = 0x1000
WRITE, NEXT = 2, 1
HERE = os.path.dirname(os.path.abspath(__file__))


def chain(parts):
    """parts: (payload bytes or writable length, writable?) placed one after another."""
    table, data, addr = b"", b"", DATA
    for i, (content, writable) in enumerate(parts):
        length = content if writable else len(content)
        flags = (WRITE if writable else 0) | (NEXT if i + 1 < len(parts) else 0)
        table += struct.pack("<QIHH", addr, length, flags, i + 1)
        data += (b"\0" * length) if writable else content
        addr += length
    return table.ljust(256, b"\0") + b"\0" + data


def fuse(opcode, nodeid, args):
    return struct.pack("<IIQQIIIHH", 40 + len(args), opcode, 1, nodeid, 0, 0, 0, 0, 0) + args


def vsock(op, src_port, dst_port, payload=b"", src_cid=3, dst_cid=2):
    return struct.pack("<QQIIIHHIII", src_cid, dst_cid, src_port, dst_port, len(payload),
                       1, op, 0, 65536, 0) + payload


def table(descs):
    """descs: (address, length, writable?) each alone in its chain."""
    return b"".join(struct.pack("<QIHH", a, n, WRITE if w else 0, 0) for a, n, w in descs).ljust(256, b"\0")


def vsock_queue(tx_packets, script, rx_len=64):
    """vsock_queue input: TX descriptor i holds tx_packets[i % len] (laid out at DATA), RX
    descriptor i a writable buffer of rx_len bytes after them; then the script of rounds."""
    data, tx = b"", []
    for i in range(16):
        p = tx_packets[i % len(tx_packets)]
        tx.append((DATA + len(data), len(p), False))
        data += p
    rx_at = DATA + len(data)
    rx = [(rx_at + i * rx_len, rx_len, True) for i in range(16)]
    return table(tx) + table(rx) + bytes([len(script)]) + bytes(script) + data


def mmio(records):
    """mmio_transport input: (write?, offset, value) 32-bit accesses."""
    return b"".join(struct.pack("<BHI", 5 if w else 4, off, v) for w, off, v in records)


def mmio_probe(accepted_low=0, features_ok=True):
    """What Linux's virtio-mmio driver does: identify, reset, ACKNOWLEDGE, DRIVER, features,
    FEATURES_OK (read back), two queues of 16 at 0x1000 and 0x2000, DRIVER_OK, an interrupt
    acknowledged, the configuration space read, and a reset."""
    r = [(False, 0x0, 0), (False, 0x4, 0), (False, 0x8, 0), (False, 0xc, 0),
         (True, 0x70, 0), (True, 0x70, 1), (True, 0x70, 3),
         (True, 0x14, 1), (False, 0x10, 0), (True, 0x14, 0), (False, 0x10, 0),
         (True, 0x24, 1), (True, 0x20, 1), (True, 0x24, 0), (True, 0x20, accepted_low)]
    status = 3
    if features_ok:
        status |= 8
        r += [(True, 0x70, status), (False, 0x70, 0)]
    for q, base in ((0, 0x1000), (1, 0x2000)):
        r += [(True, 0x30, q), (False, 0x44, 0), (False, 0x34, 0), (True, 0x38, 16),
              (True, 0x80, base), (True, 0x84, 0), (True, 0x90, base + 0x100), (True, 0x94, 0),
              (True, 0xa0, base + 0x200), (True, 0xa4, 0), (True, 0x44, 1)]
    r += [(True, 0x70, status | 4), (False, 0x60, 0), (True, 0x64, 1), (False, 0x100, 0),
          (False, 0x104, 0), (True, 0x70, 0)]
    return mmio(r)


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def pb_string(field, s):
    b = s.encode()
    return bytes([field << 3 | 2, len(b)]) + b


def main():
    init = fuse(26, 0, struct.pack("<IIII", 7, 31, 0, 0))
    write("virtio_fs", "init", chain([(init, False), (4096, True)]))
    write("virtio_fs", "lookup", chain([(fuse(1, 1, b"f\0"), False), (4096, True)]))
    write("virtio_fs", "getattr", chain([(fuse(3, 1, b"\0" * 16), False), (4096, True)]))
    write("virtio_fs", "open", chain([(fuse(14, 2, b"\0" * 8), False), (4096, True)]))
    read_in = struct.pack("<QQIIQII", 0, 0, 4096, 0, 0, 0, 0)
    write("virtio_fs", "read", chain([(fuse(15, 2, read_in), False), (8192, True)]))
    write("virtio_fs", "mkdir", chain([(fuse(9, 1, struct.pack("<II", 0o755, 0) + b"n\0"), False), (4096, True)]))
    write("virtio_fs", "readdir", chain([(fuse(28, 1, read_in), False), (8192, True)]))

    blk = lambda kind, sector: struct.pack("<IIQ", kind, 0, sector)
    write("virtio_block", "read", chain([(blk(0, 0), False), (512, True), (1, True)]))
    write("virtio_block", "write", chain([(blk(1, 8), False), (b"\xab" * 512, False), (1, True)]) + b"\0")
    write("virtio_block", "flush", chain([(blk(4, 0), False), (1, True)]))
    write("virtio_block", "id", chain([(blk(8, 0), False), (20, True), (1, True)]))

    frame = b"\0" * 12 + b"\xff" * 6 + b"\x02" * 6 + b"\x08\x00" + b"\x45" + b"\0" * 40
    write("virtio_net", "tx", chain([(frame, False)]) + b"\0")
    write("virtio_net", "rx", chain([(2048, True)]) + b"\x01")

    write("vsock_packet", "request", chain([(vsock(1, 5000, 1024), False)]))
    write("vsock_packet", "rw", chain([(vsock(5, 5000, 1024, b"hello"), False)]))
    write("vsock_packet", "shutdown", chain([(vsock(4, 5000, 1024), False)]))
    write("vsock_packet", "rst", chain([(vsock(3, 5000, 1024), False)]))
    write("vsock_packet", "credit", chain([(vsock(7, 5000, 1024), False)]))

    unknown_port = vsock(5, 5000, 9, b"x")
    write("vsock_queue", "flood", vsock_queue([unknown_port], [0x0f] * 40 + [0xf0] * 40))
    write("vsock_queue", "mixed", vsock_queue(
        [vsock(1, 5000, 1024), vsock(5, 5000, 1024, b"hello"), vsock(7, 5000, 1024),
         vsock(4, 5000, 1024, b""), vsock(3, 5000, 1024), vsock(6, 6000, 9, src_cid=9)],
        [0x44, 0x1f, 0xf1, 0x88, 0x0f, 0xff, 0x30]))
    write("vsock_queue", "small_rx", vsock_queue([unknown_port], [0x3f] * 20, rx_len=40))

    write("mmio_transport", "probe", mmio_probe())
    write("mmio_transport", "no_features_ok", mmio_probe(features_ok=False))
    write("mmio_transport", "unoffered_feature", mmio_probe(accepted_low=1 << 3))

    write("vsock_host_line", "connect", b"CONNECT 1024\n")
    write("vsock_host_line", "partial", b"CONN")

    write("agent_api", "create_sandbox", b"\0" + pb_string(1, "pod") + pb_string(2, "sb"))
    write("agent_api", "create_container", b"\1" + pb_string(1, "c1") + pb_string(2, "e1")
          + pb_string(3, '{"ociVersion":"1.0.2"}'))
    write("agent_api", "exec", b"\2" + pb_string(1, "c1") + pb_string(2, "e1"))
    write("agent_api", "write_stream", b"\3" + pb_string(1, "c1") + pb_string(3, "data"))

    spec = {
        "ociVersion": "1.0.2",
        "hostname": "pod",
        "process": {"args": ["sh"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs", "readonly": False},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf",
             "options": ["rbind", "ro"]},
        ],
        "annotations": {"io.kubernetes.cri.container-type": "sandbox"},
        "linux": {
            "resources": {"cpu": {"quota": 200000, "period": 100000}, "memory": {"limit": 268435456}},
            "namespaces": [{"type": "pid"}, {"type": "network", "path": "/var/run/netns/cni-1"}],
            "cgroupsPath": "/k8s/pod",
        },
    }
    write("oci_config", "pod", json.dumps(spec).encode())
    write("oci_config", "minimal", b'{"ociVersion":"1.0.2","root":{"path":"rootfs"}}')

    # snapshot_state: corpus/snapshot_state/template is a real template's state.json (one
    # vCPU, vsock and fs active), checked in as it is; here only the odd ones.
    write("snapshot_state", "old_version", b'{"format_version":0,"vmm_version":"0.0.1"}')
    write("snapshot_state", "not_json", b"{\"format_version\":1,")

    write("mountinfo", "host", b"22 1 0:21 / /run rw,nosuid shared:5 - tmpfs tmpfs rw\n"
          b"40 22 0:5 / /run/hako/sb/staging rw - tmpfs t rw\n"
          b"41 40 0:5 /sb/staging /run/hako/sb/shared ro,nodev,nosuid - tmpfs t rw\n")
    write("mountinfo", "escapes", b"50 41 0:9 / /run/hako/sb/shared/c\\0401\xff/rootfs rw - ext4 /dev/x rw\n")


if __name__ == "__main__":
    main()
