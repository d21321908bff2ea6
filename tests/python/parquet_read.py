"""An independent Parquet reader for the tests of npred's Parquet writer (the SENSORIUM
2023 submission file): written from the Apache Parquet format specification, with only
the standard library, numpy and libbrotlidec (through ctypes).

It reads the whole file: the Thrift compact FileMetaData, the schema tree (max repetition
and definition levels of every leaf), every row group and column chunk, every page
(DATA_PAGE v1 or v2, DICTIONARY_PAGE; UNCOMPRESSED or BROTLI), levels in the RLE /
bit-packed hybrid encoding, PLAIN or dictionary values, and assembles each leaf's records
(Dremel) for the LIST structures of any depth. read(path) -> ParquetFile."""
import ctypes
import ctypes.util
import struct

import numpy as np

# ---- Thrift compact protocol: a struct is a dict {field id: value}
T_STOP, T_TRUE, T_FALSE, T_BYTE, T_I16, T_I32, T_I64, T_DOUBLE, T_BINARY, T_LIST, T_SET, T_MAP, T_STRUCT = range(13)


class FormatError(Exception):
    pass


class _Thrift:
    def __init__(self, data, pos=0):
        self.d = data
        self.p = pos

    def byte(self):
        if self.p >= len(self.d):
            raise FormatError("thrift: ran past the end at %d" % self.p)
        b = self.d[self.p]
        self.p += 1
        return b

    def varint(self):
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 70:
                raise FormatError("thrift: varint too long")

    def zz(self):
        v = self.varint()
        return (v >> 1) ^ -(v & 1)

    def value(self, t):
        if t == T_TRUE:
            return True
        if t == T_FALSE:
            return False
        if t == T_BYTE:
            b = self.byte()
            return b - 256 if b > 127 else b
        if t in (T_I16, T_I32, T_I64):
            return self.zz()
        if t == T_DOUBLE:
            v = struct.unpack_from("<d", self.d, self.p)[0]
            self.p += 8
            return v
        if t == T_BINARY:
            n = self.varint()
            if self.p + n > len(self.d):
                raise FormatError("thrift: binary runs past the end")
            v = bytes(self.d[self.p:self.p + n])
            self.p += n
            return v
        if t in (T_LIST, T_SET):
            h = self.byte()
            n, et = h >> 4, h & 0x0F
            if n == 15:
                n = self.varint()
            if et in (T_TRUE, T_FALSE):  # booleans in a list are one byte each
                return [self.byte() == 1 for _ in range(n)]
            return [self.value(et) for _ in range(n)]
        if t == T_MAP:
            n = self.varint()
            if n == 0:
                return {}
            kv = self.byte()
            return {self.value(kv >> 4): self.value(kv & 0x0F) for _ in range(n)}
        if t == T_STRUCT:
            return self.struct()
        raise FormatError("thrift: unknown type %d" % t)

    def struct(self):
        out = {}
        last = 0
        while True:
            h = self.byte()
            if h == T_STOP:
                return out
            t, delta = h & 0x0F, h >> 4
            fid = last + delta if delta else self.zz()
            out[fid] = self.value(t)
            last = fid


def thrift_struct(data, pos=0):
    """(the struct, the position after it)"""
    t = _Thrift(data, pos)
    s = t.struct()
    return s, t.p


# ---- brotli through ctypes
_brotli = None


def brotli_decompress(data, size):
    global _brotli
    if _brotli is None:
        name = ctypes.util.find_library("brotlidec") or "libbrotlidec.so.1"
        _brotli = ctypes.CDLL(name)
        _brotli.BrotliDecoderDecompress.restype = ctypes.c_int
        _brotli.BrotliDecoderDecompress.argtypes = [ctypes.c_size_t, ctypes.c_char_p,
                                                    ctypes.POINTER(ctypes.c_size_t), ctypes.c_char_p]
    out = ctypes.create_string_buffer(max(size, 1))
    n = ctypes.c_size_t(size)
    if _brotli.BrotliDecoderDecompress(len(data), bytes(data), ctypes.byref(n), out) != 1:
        raise FormatError("brotli: the page does not decompress")
    if n.value != size:
        raise FormatError("brotli: %d bytes, the header says %d" % (n.value, size))
    return out.raw[:size]


# ---- levels: the RLE / bit-packed hybrid
def hybrid(data, pos, end, width, count):
    """count values of `width` bits from data[pos:end]"""
    out = []
    nbytes = (width + 7) // 8
    t = _Thrift(data, pos)
    while len(out) < count:
        if t.p >= end:
            raise FormatError("levels: %d of %d values" % (len(out), count))
        h = t.varint()
        if h & 1:  # bit-packed: (h >> 1) groups of 8 values, LSB first
            n = (h >> 1) * 8
            raw = data[t.p:t.p + (h >> 1) * width]
            t.p += (h >> 1) * width
            bits = int.from_bytes(raw, "little")
            out.extend((bits >> (i * width)) & ((1 << width) - 1) for i in range(n))
        else:
            v = int.from_bytes(data[t.p:t.p + nbytes], "little")
            t.p += nbytes
            out.extend([v] * (h >> 1))
    if t.p > end:
        raise FormatError("levels run past their length")
    return out[:count]


def bit_width(v):
    return int(v).bit_length()


PHYSICAL = {0: "BOOLEAN", 1: "INT32", 2: "INT64", 3: "INT96", 4: "FLOAT", 5: "DOUBLE", 6: "BYTE_ARRAY",
            7: "FIXED_LEN_BYTE_ARRAY"}
CODECS = {0: "UNCOMPRESSED", 1: "SNAPPY", 2: "GZIP", 3: "LZO", 4: "BROTLI", 5: "LZ4", 6: "ZSTD", 7: "LZ4_RAW"}
REPETITION = {0: "REQUIRED", 1: "OPTIONAL", 2: "REPEATED"}


def plain_values(data, pos, end, ptype, n):
    if ptype == 6:
        out = []
        for _ in range(n):
            (ln,) = struct.unpack_from("<I", data, pos)
            out.append(bytes(data[pos + 4:pos + 4 + ln]))
            pos += 4 + ln
        if pos > end:
            raise FormatError("BYTE_ARRAY values run past the page")
        return out
    dt = {1: "<i4", 2: "<i8", 4: "<f4", 5: "<f8"}.get(ptype)
    if dt is None:
        raise FormatError("physical type %s not read here" % PHYSICAL.get(ptype))
    size = np.dtype(dt).itemsize
    if pos + n * size > end:
        raise FormatError("values run past the page")
    return list(np.frombuffer(bytes(data[pos:pos + n * size]), dtype=dt))


class Leaf:
    def __init__(self, path, element, max_rep, max_def, nodes):
        self.path = path            # names from the top column down
        self.element = element      # the leaf's SchemaElement (dict)
        self.max_rep = max_rep
        self.max_def = max_def
        self.nodes = nodes          # the SchemaElements of the path


class ParquetFile:
    pass


def _schema(elements):
    """leaves in file order from the flattened schema list"""
    leaves = []
    pos = [1]

    def walk(path, nodes, rep, dfn):
        e = elements[pos[0]]
        pos[0] += 1
        r = e.get(3, 0)
        rep2 = rep + (r == 2)
        dfn2 = dfn + (r != 0)
        name = e[4].decode()
        if 5 in e and e[5] > 0:
            for _ in range(e[5]):
                walk(path + [name], nodes + [e], rep2, dfn2)
        else:
            leaves.append(Leaf(path + [name], e, rep2, dfn2, nodes + [e]))

    root = elements[0]
    for _ in range(root.get(5, 0)):
        walk([], [], 0, 0)
    if pos[0] != len(elements):
        raise FormatError("schema: %d elements, %d used" % (len(elements), pos[0]))
    return leaves


def _assemble(leaf, reps, defs, values):
    """records of one leaf: nested python lists for the LIST levels, None for nulls"""
    k = leaf.max_rep
    # each repeated level adds one to the definition; every node of this writer's
    # structures is optional or repeated: max_def = 2k + 1 (optional top, optional elements)
    if leaf.max_def != 2 * k + 1:
        raise FormatError("%s: levels (%d, %d) are not a nullable LIST structure" %
                          (".".join(leaf.path), k, leaf.max_def))
    rows = []
    vi = 0
    cur = [None] * (k + 1)
    for r, d in zip(reps, defs):
        if r == 0:
            if d == 0:
                rows.append(None)
                continue
            if k == 0:
                rows.append(values[vi])
                vi += 1
                continue
            rows.append([])
            cur[0] = rows[-1]
        elif not rows or rows[-1] is None:
            raise FormatError("repetition level %d with no open record" % r)
        for j in range(max(r - 1, 0), k):  # repetition level r repeats list r - 1
            if d < 2 * j + 2:  # list j is empty
                break
            if d == 2 * j + 2:  # a null element
                cur[j].append(None)
                break
            if j == k - 1:
                cur[j].append(values[vi])
                vi += 1
            else:
                new = []
                cur[j].append(new)
                cur[j + 1] = new
    if vi != len(values):
        raise FormatError("%d values, %d used" % (len(values), vi))
    return rows


def _read_chunk(data, leaf, cc, info):
    md = cc[3]
    codec = md[4]
    ptype = md[1]
    if codec not in (0, 4):
        raise FormatError("codec %s not read here" % CODECS.get(codec))
    start = md.get(11, md[9]) if 11 in md else md[9]
    end = start + md[7]
    pos = start
    reps, defs, values, dictionary = [], [], [], None
    pages = []
    while pos < end:
        ph, body = thrift_struct(data, pos)
        usize, csize = ph[2], ph[3]
        raw = data[body:body + csize]
        if len(raw) != csize:
            raise FormatError("page runs past the end of the file")
        pos = body + csize
        ptype_page = ph[1]
        pages.append({"type": ptype_page, "header": ph, "codec": codec})
        if ptype_page == 2:  # dictionary page
            page = brotli_decompress(raw, usize) if codec == 4 else raw
            dictionary = plain_values(page, 0, len(page), ptype, ph[7][1])
            continue
        if ptype_page == 0:
            dh = ph[5]
            n = dh[1]
            page = brotli_decompress(raw, usize) if codec == 4 else raw
            if len(page) != usize:
                raise FormatError("page of %d bytes, header says %d" % (len(page), usize))
            p = 0
            r = [0] * n
            if leaf.max_rep:
                (ln,) = struct.unpack_from("<I", page, p)
                r = hybrid(page, p + 4, p + 4 + ln, bit_width(leaf.max_rep), n)
                p += 4 + ln
            dd = [leaf.max_def] * n
            if leaf.max_def:
                (ln,) = struct.unpack_from("<I", page, p)
                dd = hybrid(page, p + 4, p + 4 + ln, bit_width(leaf.max_def), n)
                p += 4 + ln
            enc = dh[2]
        elif ptype_page == 3:  # data page v2: levels uncompressed before the values
            dh = ph[8]
            n = dh[3]
            rl, dl = dh[6], dh[5]
            lv = raw[:rl + dl]
            r = hybrid(lv, 0, rl, bit_width(leaf.max_rep), n) if leaf.max_rep else [0] * n
            dd = hybrid(lv, rl, rl + dl, bit_width(leaf.max_def), n) if leaf.max_def else [leaf.max_def] * n
            rest = raw[rl + dl:]
            compressed = dh.get(7, True)
            page = brotli_decompress(rest, usize - rl - dl) if (codec == 4 and compressed) else rest
            p = 0
            enc = dh[4]
        else:
            raise FormatError("page type %d not read here" % ptype_page)
        nv = sum(1 for x in dd if x == leaf.max_def)
        if enc == 0:
            vals = plain_values(page, p, len(page), ptype, nv)
        elif enc in (2, 8):  # dictionary indices: bit width byte + hybrid
            w = page[p]
            idx = hybrid(page, p + 1, len(page), w, nv)
            vals = [dictionary[i] for i in idx]
        else:
            raise FormatError("encoding %d not read here" % enc)
        reps += r
        defs += dd
        values += vals
    if pos != end:
        raise FormatError("pages end at %d, the chunk at %d" % (pos, end))
    if len(defs) != md[5]:
        raise FormatError("%d level entries, the chunk says %d" % (len(defs), md[5]))
    info.extend(pages)
    return _assemble(leaf, reps, defs, values)


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 12 or data[:4] != b"PAR1" or data[-4:] != b"PAR1":
        raise FormatError("%s: not a Parquet file (magic)" % path)
    (flen,) = struct.unpack_from("<I", data, len(data) - 8)
    fstart = len(data) - 8 - flen
    if fstart < 4:
        raise FormatError("%s: footer length %d too large" % (path, flen))
    meta, endp = thrift_struct(data, fstart)
    if endp != len(data) - 8:
        raise FormatError("%s: footer of %d bytes, %d parsed" % (path, flen, endp - fstart))
    pf = ParquetFile()
    pf.meta = meta
    pf.version = meta[1]
    pf.num_rows = meta[3]
    pf.created_by = meta.get(6, b"").decode()
    pf.key_value = meta.get(5)
    pf.schema = meta[2]
    pf.leaves = _schema(meta[2])
    pf.row_groups = meta[4]
    pf.pages = []
    cols = {}
    for rg in meta[4]:
        if len(rg[1]) != len(pf.leaves):
            raise FormatError("row group with %d columns, schema has %d" % (len(rg[1]), len(pf.leaves)))
        nrow = None
        for leaf, cc in zip(pf.leaves, rg[1]):
            if [x.decode() for x in cc[3][3]] != leaf.path:
                raise FormatError("column chunk path %s, schema %s" % (cc[3][3], leaf.path))
            rows = _read_chunk(data, leaf, cc, pf.pages)
            if nrow is not None and len(rows) != nrow:
                raise FormatError("columns of a row group differ in rows")
            nrow = len(rows)
            cols.setdefault(leaf.path[0], []).extend(rows)
        if nrow != rg[3]:
            raise FormatError("row group says %d rows, has %d" % (rg[3], nrow))
    if sum(rg[3] for rg in meta[4]) != pf.num_rows:
        raise FormatError("num_rows %d is not the sum of the row groups" % pf.num_rows)
    pf.columns = {leaf.path[0]: cols.get(leaf.path[0], []) for leaf in pf.leaves}
    return pf
