#!/usr/bin/env python3
"""Independent reference implementation of docs/row-hash.md (etlkit-row-v1).

Written from the specification only: no Arrow, no Rust. It computes the canonical bytes of each row
described below and their SHA-256 (hashlib) and BLAKE3 (`pip install blake3`) digests, and writes
vectors.json next to this file. The Rust test `tests/golden.rs` rebuilds every row as Arrow arrays of
the stated types and checks that etlkit-hash produces exactly these bytes and digests.

Cell format: [type, value]. Types use a small grammar: int8..int64, uint8..uint64, float16/32/64,
decimal32/64/128/256(p,s), bool, utf8, large_utf8, utf8_view, binary, large_binary, binary_view,
fixed_size_binary(n), date32, date64, timestamp(unit) (no zone), timestamp(unit,ZONE),
time32(s|ms), time64(us|ns), duration(unit), null, list<T>, large_list<T>, fixed_size_list<T;n>,
struct<name:T,...>, dictionary<K,T>.
Values: JSON null for NULL; integers as JSON numbers (the raw stored value in the type's unit); floats
as strings (Python repr / "NaN" / "inf" / "-inf"); decimals as the unscaled integer in a string;
binary as hex; lists as arrays; structs as arrays of field values in field order.

Run: python3 gen_vectors.py   (rewrites vectors.json; commit both)
"""
import hashlib
import json
import math
import os
import struct

import blake3


# ---- primitives (section 3 of the spec) ----

def Z(x: int) -> bytes:
    n = x if x >= 0 else -x - 1
    k = (n.bit_length() + 8) // 8
    return x.to_bytes(k, "big", signed=True)


def LZ(x: int) -> bytes:
    z = Z(x)
    return bytes([len(z)]) + z


def LEB(n: int) -> bytes:
    assert n >= 0
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def compact(kind: int, x: int) -> bytes:
    z = Z(x)
    assert len(z) <= 15
    return bytes([(kind << 4) | len(z)]) + z


# ---- the type grammar ----

def split_top(s: str, sep: str):
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch in "<(":
            depth += 1
        elif ch in ">)":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts]


def parse_type(t: str):
    t = t.strip()
    if "<" in t:
        name, inner = t.split("<", 1)
        inner = inner[:-1]
        if name in ("list", "large_list"):
            return (name, parse_type(inner))
        if name == "fixed_size_list":
            elem, n = split_top(inner, ";")
            return (name, parse_type(elem), int(n))
        if name == "struct":
            fields = []
            for f in split_top(inner, ","):
                fname, ftype = f.split(":", 1)
                fields.append((fname, parse_type(ftype)))
            return (name, fields)
        if name == "dictionary":
            _key, value = split_top(inner, ",")
            return (name, parse_type(value))
        raise ValueError(t)
    if "(" in t:
        name, args = t.split("(", 1)
        args = [a.strip() for a in args[:-1].split(",")]
        return (name, *args)
    return (t,)


UNIT_NS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}


def f64_bits(x: float) -> int:
    return struct.unpack(">Q", struct.pack(">d", x))[0]


def parse_float(s: str) -> float:
    return float(s)  # accepts "NaN", "inf", "-inf", "-0.0"


def encode_float(x: float) -> bytes:
    if math.isnan(x):
        bits = 0x7FF8000000000000
    elif x == 0.0:
        bits = 0
    else:
        bits = f64_bits(x)
    b = bits.to_bytes(8, "big").rstrip(b"\x00")
    return bytes([0x20 | len(b)]) + b


def encode(t, v) -> bytes:
    name = t[0]
    if v is None or name == "null":
        return b"\x00"
    if name == "bool":
        return b"\x02" if v else b"\x01"
    if name in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"):
        bits = int(name.lstrip("uint"))
        lo, hi = (0, 2**bits) if name.startswith("u") else (-(2 ** (bits - 1)), 2 ** (bits - 1))
        assert lo <= v < hi, (name, v)
        return compact(0x1, v)
    if name == "float64":
        return encode_float(parse_float(v))
    if name == "float32":
        # round the decimal text to binary32, then widen exactly to binary64
        x = struct.unpack(">f", struct.pack(">f", parse_float(v)))[0]
        return encode_float(x)
    if name == "float16":
        x = struct.unpack(">e", struct.pack(">e", parse_float(v)))[0]
        return encode_float(x)
    if name in ("decimal32", "decimal64", "decimal128", "decimal256"):
        m, s = int(v), int(t[2])
        if m == 0:
            s = 0
        while m != 0 and m % 10 == 0:
            m //= 10
            s -= 1
        return b"\x30" + LZ(s) + LZ(m)
    if name in ("utf8", "large_utf8", "utf8_view"):
        b = v.encode("utf-8")
        return b"\x40" + LEB(len(b)) + b
    if name in ("binary", "large_binary", "binary_view", "fixed_size_binary"):
        b = bytes.fromhex(v)
        if name == "fixed_size_binary":
            assert len(b) == int(t[1])
        return b"\x41" + LEB(len(b)) + b
    if name == "date32":
        return compact(0x5, v)
    if name == "date64":
        assert v % 86_400_000 == 0
        return compact(0x5, v // 86_400_000)
    if name == "timestamp":
        kind = 0x6 if len(t) > 2 else 0x7
        return compact(kind, v * UNIT_NS[t[1]])
    if name in ("time32", "time64"):
        return compact(0x8, v * UNIT_NS[t[1]])
    if name == "duration":
        return compact(0x9, v * UNIT_NS[t[1]])
    if name in ("list", "large_list", "fixed_size_list"):
        if name == "fixed_size_list":
            assert len(v) == t[2]
        return b"\xa0" + LEB(len(v)) + b"".join(encode(t[1], e) for e in v)
    if name == "struct":
        fields = t[1]
        assert len(v) == len(fields)
        return b"\xb0" + LEB(len(fields)) + b"".join(encode(ft, fv) for (_, ft), fv in zip(fields, v))
    if name == "dictionary":
        return encode(t[1], v)
    raise ValueError(f"unsupported type {t}")


# ---- the vectors ----

TAXI = [
    ["int32", 2],                                   # VendorID
    ["timestamp(us)", 1704067200000000],            # tpep_pickup_datetime
    ["timestamp(us)", 1704068100000000],            # tpep_dropoff_datetime
    ["float64", "1.0"],                             # passenger_count
    ["float64", "3.27"],                            # trip_distance
    ["float64", "1.0"],                             # RatecodeID
    ["large_utf8", "N"],                            # store_and_fwd_flag
    ["int32", 161],                                 # PULocationID
    ["int32", 236],                                 # DOLocationID
    ["int64", 1],                                   # payment_type
    ["float64", "17.7"],                            # fare_amount
    ["float64", "1.0"],                             # extra
    ["float64", "0.5"],                             # mta_tax
    ["float64", "4.34"],                            # tip_amount
    ["float64", "0.0"],                             # tolls_amount
    ["float64", "1.0"],                             # improvement_surcharge
    ["float64", "27.04"],                           # total_amount
    ["float64", "2.5"],                             # congestion_surcharge
    ["float64", None],                              # Airport_fee
]

VECTORS = [
    ("worked_example", [["int64", 7], ["utf8", "ab"], ["float64", "2.5"], ["bool", True], ["utf8", None]]),
    ("int64_7", [["int64", 7]]),
    ("int32_7_equals_int64_7", [["int32", 7]]),
    ("uint8_7_equals_int64_7", [["uint8", 7]]),
    ("int_widths_and_signs", [["int8", -1], ["uint8", 255], ["int16", -32768], ["uint16", 65535],
                              ["int32", 128], ["uint32", 4294967295], ["int8", -128], ["int16", -129]]),
    ("int64_extremes", [["int64", -9223372036854775808], ["int64", 9223372036854775807],
                        ["uint64", 18446744073709551615], ["int64", 0]]),
    ("nulls_of_every_kind", [["int64", None], ["float64", None], ["utf8", None], ["bool", None],
                             ["timestamp(ms,UTC)", None], ["decimal128(10,2)", None], ["null", None],
                             ["list<int64>", None], ["binary", None]]),
    ("booleans", [["bool", True], ["bool", False], ["bool", None]]),
    ("float64_values", [["float64", "0.0"], ["float64", "1.0"], ["float64", "0.1"], ["float64", "-2.5"],
                        ["float64", "123456.789"]]),
    ("float64_specials", [["float64", "-0.0"], ["float64", "NaN"], ["float64", "inf"], ["float64", "-inf"],
                          ["float64", "5e-324"], ["float64", "1.7976931348623157e+308"]]),
    ("float32_and_float16_widen", [["float32", "1.5"], ["float32", "0.1"], ["float16", "0.5"],
                                   ["float16", "-0.0"], ["float32", "NaN"], ["float16", "-inf"]]),
    ("float64_1_5_equals_float32_1_5", [["float64", "1.5"]]),
    ("decimal_normalisation", [["decimal128(10,2)", "1250"], ["decimal128(38,0)", "0"],
                               ["decimal128(5,0)", "300"], ["decimal256(76,10)", "-1234560000000"],
                               ["decimal128(38,2)", "-170141183460469231731687303715884105728"]]),
    ("decimal_12_5000_equals_12_50", [["decimal128(12,4)", "125000"]]),
    ("decimal256_and_decimal64_equal_values", [["decimal256(40,1)", "125"], ["decimal64(18,3)", "12500"],
                                               ["decimal32(9,0)", "-7"]]),
    ("strings", [["utf8", ""], ["utf8", "hello"], ["utf8", "Zürich ☃ 東京"], ["utf8", "x" * 200]]),
    ("large_utf8_equals_utf8", [["large_utf8", ""], ["large_utf8", "hello"], ["large_utf8", "Zürich ☃ 東京"],
                                ["large_utf8", "x" * 200]]),
    ("utf8_view_equals_utf8", [["utf8_view", ""], ["utf8_view", "hello"], ["utf8_view", "Zürich ☃ 東京"],
                               ["utf8_view", "x" * 200]]),
    ("dictionary_utf8_equals_utf8", [["dictionary<int32,utf8>", ""], ["dictionary<int8,utf8>", "hello"],
                                     ["dictionary<int32,large_utf8>", "Zürich ☃ 東京"],
                                     ["dictionary<uint16,utf8>", "x" * 200]]),
    ("binary", [["binary", ""], ["binary", "deadbeef"], ["binary", "6162"]]),
    ("binary_physical_types_equal", [["large_binary", ""], ["binary_view", "deadbeef"],
                                     ["fixed_size_binary(2)", "6162"]]),
    ("string_ab_differs_from_binary_ab", [["utf8", "ab"]]),
    ("dates", [["date32", 19723], ["date32", -1], ["date32", 0]]),
    ("date64_equals_date32", [["date64", 1704067200000], ["date64", -86400000], ["date64", 0]]),
    ("timestamp_instant_ms", [["timestamp(ms,UTC)", 1704067200123]]),
    ("timestamp_instant_us_same_instant", [["timestamp(us,UTC)", 1704067200123000]]),
    ("timestamp_instant_ns_other_zone_same_instant", [["timestamp(ns,Europe/Berlin)", 1704067200123000000]]),
    ("timestamp_instant_s_extremes", [["timestamp(s,+01:00)", 9223372036854775807],
                                      ["timestamp(s,UTC)", -9223372036854775808], ["timestamp(s,UTC)", 0]]),
    ("timestamp_local_differs_from_instant", [["timestamp(ms)", 1704067200123]]),
    ("timestamp_local_units", [["timestamp(s)", 1704067200], ["timestamp(us)", 1704067200000000],
                               ["timestamp(ns)", -1]]),
    ("times_of_day", [["time32(s)", 3600], ["time32(ms)", 3600000], ["time64(us)", 3600000000],
                      ["time64(ns)", 3600000000000], ["time64(ns)", 0]]),
    ("durations", [["duration(s)", 90], ["duration(ms)", 90000], ["duration(us)", -1],
                   ["duration(ns)", 90000000000], ["duration(s)", -9223372036854775808]]),
    ("lists", [["list<int64>", [1, None, 3]], ["large_list<utf8>", ["a", None]],
               ["fixed_size_list<int32;2>", [1, 2]], ["list<int64>", []], ["list<list<int32>>", [[1], [], None]]]),
    ("list_physical_types_equal", [["large_list<int32>", [1, None, 3]], ["list<large_utf8>", ["a", None]],
                                   ["list<int16>", [1, 2]], ["large_list<int8>", []],
                                   ["large_list<list<int64>>", [[1], [], None]]]),
    ("structs", [["struct<a:int64,b:utf8>", [1, "x"]], ["struct<a:int64,b:utf8>", None],
                 ["struct<p:struct<q:bool>,r:list<float64>>", [[True], ["1.0", None]]]]),
    ("int_float_decimal_7_all_differ", [["int64", 7], ["float64", "7.0"], ["decimal128(10,0)", "7"]]),
    ("column_order_matters_a", [["int64", 1], ["int64", 2]]),
    ("column_order_matters_b", [["int64", 2], ["int64", 1]]),
    ("null_vs_empty_vs_zero", [["utf8", None], ["utf8", ""], ["int64", 0], ["bool", False],
                               ["list<int64>", []], ["float64", "0.0"]]),
    ("nyc_yellow_taxi_row", TAXI),
]


def main():
    out = []
    for name, cells in VECTORS:
        canonical = b"".join(encode(parse_type(t), v) for t, v in cells)
        out.append({
            "name": name,
            "cells": cells,
            "canonical_hex": canonical.hex(),
            "sha256": hashlib.sha256(canonical).hexdigest(),
            "blake3": blake3.blake3(canonical).hexdigest(),
        })
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors.json")
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n  \"spec\": \"etlkit-row-v1\",\n  \"generator\": \"gen_vectors.py (Python, hashlib + blake3)\",\n")
        f.write("  \"vectors\": [\n")
        for i, v in enumerate(out):
            f.write("    " + json.dumps(v, ensure_ascii=False) + ("," if i + 1 < len(out) else "") + "\n")
        f.write("  ]\n}\n")
    print(f"wrote {len(out)} vectors to {path}")


if __name__ == "__main__":
    main()
