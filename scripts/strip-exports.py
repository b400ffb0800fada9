#!/usr/bin/env python3
"""Removes the exports of proxy-wasm callbacks the filter does not use from the built .wasm.

The Rust SDK exports every callback of the ABI. Envoy calls an exported callback on every
stream event (response headers, response body, log, ...), each call a crossing into the VM
that here would only answer "continue". Without the export, Envoy skips the call. The
functions stay in the module; only their export entries go. Idempotent.

    scripts/strip-exports.py target/wasm32-wasip1/release/gateway_aggregator.wasm
"""
import sys

# What the filter uses. Everything else the SDK exports is a no-op for it. `proxy_on_done` too:
# no context of ours overrides on_done, and Envoy treats a missing export as "done" and still
# calls `proxy_on_delete` (which frees the SDK's context), so every stream saves a crossing.
KEEP = {
    "memory",
    "_initialize",
    "proxy_abi_version_0_2_1",
    "proxy_on_vm_start",
    "proxy_on_configure",
    "proxy_on_tick",
    "proxy_on_context_create",
    "proxy_on_request_headers",
    "proxy_on_request_body",
    "proxy_on_request_trailers",
    "proxy_on_http_call_response",
    "proxy_on_memory_allocate",
    "proxy_on_delete",
}
EXPORT_SECTION = 7


def leb128(data, i):
    value, shift = 0, 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def encode_leb128(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def strip(data):
    if data[:4] != b"\0asm":
        raise SystemExit("not a WebAssembly module")
    out = bytearray(data[:8])
    i, removed = 8, []
    while i < len(data):
        section, body_start = data[i], None
        size, body_start = leb128(data, i + 1)
        body = data[body_start : body_start + size]
        if section == EXPORT_SECTION:
            count, j = leb128(body, 0)
            kept = []
            for _ in range(count):
                start = j
                length, j = leb128(body, j)
                name = body[j : j + length].decode()
                j += length + 1  # name, then the kind byte
                _, j = leb128(body, j)  # the index
                if name in KEEP:
                    kept.append(body[start:j])
                else:
                    removed.append(name)
            body = encode_leb128(len(kept)) + b"".join(kept)
        out.append(section)
        out += encode_leb128(len(body)) + body
        i = body_start + size
    return bytes(out), removed


def main():
    path = sys.argv[1]
    with open(path, "rb") as f:
        data = f.read()
    stripped, removed = strip(data)
    if removed:
        with open(path, "wb") as f:
            f.write(stripped)
        print(f"strip-exports: {len(removed)} unused callbacks no longer exported")


if __name__ == "__main__":
    main()
