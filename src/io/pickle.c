/* Restricted unpickler: see pickle.h. The pickle virtual machine here has a
 * stack, a mark stack and a memo; every object it creates is recorded in one
 * list so freeing never recurses (pickles can build cycles through the memo). */
#include "io/pickle.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct npred_pickle {
    npred_pk_obj **objs; /* every object created, for freeing */
    size_t nobj, capobj;
    npred_pk_obj *root;
};

/* ---- opcode names (all of pickle protocols 0..5, for error messages) ---- */

static const char *opcode_name(unsigned op)
{
    switch (op) {
    case '(': return "MARK";
    case '.': return "STOP";
    case '0': return "POP";
    case '1': return "POP_MARK";
    case '2': return "DUP";
    case 'F': return "FLOAT";
    case 'I': return "INT";
    case 'J': return "BININT";
    case 'K': return "BININT1";
    case 'L': return "LONG";
    case 'M': return "BININT2";
    case 'N': return "NONE";
    case 'P': return "PERSID";
    case 'Q': return "BINPERSID";
    case 'R': return "REDUCE";
    case 'S': return "STRING";
    case 'T': return "BINSTRING";
    case 'U': return "SHORT_BINSTRING";
    case 'V': return "UNICODE";
    case 'X': return "BINUNICODE";
    case 'a': return "APPEND";
    case 'b': return "BUILD";
    case 'c': return "GLOBAL";
    case 'd': return "DICT";
    case '}': return "EMPTY_DICT";
    case 'e': return "APPENDS";
    case 'g': return "GET";
    case 'h': return "BINGET";
    case 'i': return "INST";
    case 'j': return "LONG_BINGET";
    case 'l': return "LIST";
    case ']': return "EMPTY_LIST";
    case 'o': return "OBJ";
    case 'p': return "PUT";
    case 'q': return "BINPUT";
    case 'r': return "LONG_BINPUT";
    case 's': return "SETITEM";
    case 't': return "TUPLE";
    case ')': return "EMPTY_TUPLE";
    case 'u': return "SETITEMS";
    case 'G': return "BINFLOAT";
    case 'B': return "BINBYTES";
    case 'C': return "SHORT_BINBYTES";
    case 0x80: return "PROTO";
    case 0x81: return "NEWOBJ";
    case 0x82: return "EXT1";
    case 0x83: return "EXT2";
    case 0x84: return "EXT4";
    case 0x85: return "TUPLE1";
    case 0x86: return "TUPLE2";
    case 0x87: return "TUPLE3";
    case 0x88: return "NEWTRUE";
    case 0x89: return "NEWFALSE";
    case 0x8a: return "LONG1";
    case 0x8b: return "LONG4";
    case 0x8c: return "SHORT_BINUNICODE";
    case 0x8d: return "BINUNICODE8";
    case 0x8e: return "BINBYTES8";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 0x92: return "NEWOBJ_EX";
    case 0x93: return "STACK_GLOBAL";
    case 0x94: return "MEMOIZE";
    case 0x95: return "FRAME";
    case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";
    case 0x98: return "READONLY_BUFFER";
    }
    return NULL;
}

const char *npred_pk_kind_name(npred_pk_kind k)
{
    switch (k) {
    case NPRED_PK_NONE: return "None";
    case NPRED_PK_BOOL: return "bool";
    case NPRED_PK_INT: return "int";
    case NPRED_PK_FLOAT: return "float";
    case NPRED_PK_STR: return "str";
    case NPRED_PK_TUPLE: return "tuple";
    case NPRED_PK_LIST: return "list";
    case NPRED_PK_DICT: return "dict";
    case NPRED_PK_GLOBAL: return "global";
    case NPRED_PK_STORAGE: return "storage";
    case NPRED_PK_TENSOR: return "tensor";
    }
    return "?";
}

/* ---- the globals we accept ---- */

static const struct {
    const char *module, *name, *qualname;
    npred_pk_global which;
    npred_tensor_dtype dtype;
} allowed_globals[] = {
    {"collections", "OrderedDict", "collections.OrderedDict", NPRED_PK_G_ORDERED_DICT, 0},
    {"torch._utils", "_rebuild_tensor_v2", "torch._utils._rebuild_tensor_v2",
     NPRED_PK_G_REBUILD_TENSOR_V2, 0},
    {"torch._utils", "_rebuild_parameter", "torch._utils._rebuild_parameter",
     NPRED_PK_G_REBUILD_PARAMETER, 0},
    {"torch", "FloatStorage", "torch.FloatStorage", NPRED_PK_G_STORAGE, NPRED_TENSOR_F32},
    {"torch", "DoubleStorage", "torch.DoubleStorage", NPRED_PK_G_STORAGE, NPRED_TENSOR_F64},
    {"torch", "HalfStorage", "torch.HalfStorage", NPRED_PK_G_STORAGE, NPRED_TENSOR_F16},
    {"torch", "BFloat16Storage", "torch.BFloat16Storage", NPRED_PK_G_STORAGE, NPRED_TENSOR_BF16},
    {"torch", "LongStorage", "torch.LongStorage", NPRED_PK_G_STORAGE, NPRED_TENSOR_I64},
    {"torch", "IntStorage", "torch.IntStorage", NPRED_PK_G_STORAGE, NPRED_TENSOR_I32},
    {"torch", "ShortStorage", "torch.ShortStorage", NPRED_PK_G_STORAGE, NPRED_TENSOR_I16},
    {"torch", "CharStorage", "torch.CharStorage", NPRED_PK_G_STORAGE, NPRED_TENSOR_I8},
    {"torch", "ByteStorage", "torch.ByteStorage", NPRED_PK_G_STORAGE, NPRED_TENSOR_U8},
    {"torch", "BoolStorage", "torch.BoolStorage", NPRED_PK_G_STORAGE, NPRED_TENSOR_BOOL},
};

/* ---- machine state ---- */

typedef struct {
    const uint8_t *p;
    size_t len, pos;
    const char *name;
    size_t op_pos; /* offset of the opcode being executed */
    unsigned op;
    npred_pickle *pk;
    npred_pk_obj **stack;
    size_t sn, scap;
    size_t *marks;
    size_t mn, mcap;
    npred_pk_obj **memo;
    size_t memocap, memo_next;
} vm;

static npred_status fail(vm *v, npred_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static npred_status fail(vm *v, npred_status s, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *on = opcode_name(v->op);
    if (on)
        return npred_errorf(s, "%s: byte %zu, opcode %s: %s", v->name, v->op_pos, on, msg);
    return npred_errorf(s, "%s: byte %zu, opcode 0x%02x: %s", v->name, v->op_pos, v->op, msg);
}

/* Copy at most 80 bytes of s into buf, replacing unprintable bytes with '?'. */
static const char *printable(char *buf, size_t bufsize, const char *s, size_t len)
{
    size_t n = len < bufsize - 4 ? len : bufsize - 4;
    if (n > 80) n = 80;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[i] = (c >= 32 && c < 127) ? (char)c : '?';
    }
    if (n < len) memcpy(buf + n, "...", 3), n += 3;
    buf[n] = 0;
    return buf;
}

static npred_pk_obj *new_obj(vm *v, npred_pk_kind kind)
{
    npred_pickle *pk = v->pk;
    if (pk->nobj == pk->capobj) {
        size_t cap = pk->capobj ? 2 * pk->capobj : 64;
        npred_pk_obj **o = realloc(pk->objs, cap * sizeof *o);
        if (!o) return NULL;
        pk->objs = o;
        pk->capobj = cap;
    }
    npred_pk_obj *o = calloc(1, sizeof *o);
    if (!o) return NULL;
    o->kind = kind;
    pk->objs[pk->nobj++] = o;
    return o;
}

#define NOMEM(v) fail(v, NPRED_ERR_NOMEM, "out of memory")

static npred_status push(vm *v, npred_pk_obj *o)
{
    if (!o) return NOMEM(v);
    if (v->sn == v->scap) {
        size_t cap = v->scap ? 2 * v->scap : 64;
        npred_pk_obj **s = realloc(v->stack, cap * sizeof *s);
        if (!s) return NOMEM(v);
        v->stack = s;
        v->scap = cap;
    }
    v->stack[v->sn++] = o;
    return NPRED_OK;
}

static npred_status pop(vm *v, npred_pk_obj **o)
{
    if (v->sn == 0 || (v->mn && v->sn <= v->marks[v->mn - 1]))
        return fail(v, NPRED_ERR_FORMAT, "stack underflow");
    *o = v->stack[--v->sn];
    return NPRED_OK;
}

static npred_status top(vm *v, npred_pk_obj **o)
{
    if (v->sn == 0 || (v->mn && v->sn <= v->marks[v->mn - 1]))
        return fail(v, NPRED_ERR_FORMAT, "stack underflow");
    *o = v->stack[v->sn - 1];
    return NPRED_OK;
}

/* Pop the topmost mark; the items above it are stack[*first .. sn). */
static npred_status pop_mark(vm *v, size_t *first)
{
    if (v->mn == 0) return fail(v, NPRED_ERR_FORMAT, "no MARK on the stack");
    *first = v->marks[--v->mn];
    return NPRED_OK;
}

static npred_status need(vm *v, size_t n)
{
    if (v->len - v->pos < n)
        return fail(v, NPRED_ERR_FORMAT, "truncated pickle: needs %zu more bytes, %zu left", n,
                    v->len - v->pos);
    return NPRED_OK;
}

static uint64_t rd_le(const uint8_t *p, int n)
{
    uint64_t x = 0;
    for (int i = n - 1; i >= 0; i--) x = (x << 8) | p[i];
    return x;
}

static npred_status seq_append(vm *v, npred_pk_obj *seq, npred_pk_obj *item)
{
    if (seq->u.seq.n == seq->u.seq.cap) {
        size_t cap = seq->u.seq.cap ? 2 * seq->u.seq.cap : 4;
        npred_pk_obj **it = realloc(seq->u.seq.items, cap * sizeof *it);
        if (!it) return NOMEM(v);
        seq->u.seq.items = it;
        seq->u.seq.cap = cap;
    }
    seq->u.seq.items[seq->u.seq.n++] = item;
    return NPRED_OK;
}

static npred_status dict_set(vm *v, npred_pk_obj *d, npred_pk_obj *k, npred_pk_obj *val)
{
    if (d->u.dict.n == d->u.dict.cap) {
        size_t cap = d->u.dict.cap ? 2 * d->u.dict.cap : 8;
        npred_pk_obj **ks = realloc(d->u.dict.keys, cap * sizeof *ks);
        if (!ks) return NOMEM(v);
        d->u.dict.keys = ks;
        npred_pk_obj **vs = realloc(d->u.dict.vals, cap * sizeof *vs);
        if (!vs) return NOMEM(v);
        d->u.dict.vals = vs;
        d->u.dict.cap = cap;
    }
    /* Duplicate keys are kept here (Python would overwrite); the consumer
     * rejects duplicate tensor names. */
    d->u.dict.keys[d->u.dict.n] = k;
    d->u.dict.vals[d->u.dict.n] = val;
    d->u.dict.n++;
    return NPRED_OK;
}

static npred_status make_str(vm *v, size_t n)
{
    npred_status s = need(v, n);
    if (s) return s;
    npred_pk_obj *o = new_obj(v, NPRED_PK_STR);
    if (!o) return NOMEM(v);
    o->u.str.s = malloc(n + 1);
    if (!o->u.str.s) return NOMEM(v);
    memcpy(o->u.str.s, v->p + v->pos, n);
    o->u.str.s[n] = 0;
    o->u.str.len = n;
    v->pos += n;
    return push(v, o);
}

static npred_status make_int(vm *v, int64_t x)
{
    npred_pk_obj *o = new_obj(v, NPRED_PK_INT);
    if (o) o->u.i = x;
    return push(v, o);
}

static npred_status make_tuple(vm *v, size_t first)
{
    npred_pk_obj *t = new_obj(v, NPRED_PK_TUPLE);
    if (!t) return NOMEM(v);
    for (size_t i = first; i < v->sn; i++) {
        npred_status s = seq_append(v, t, v->stack[i]);
        if (s) return s;
    }
    v->sn = first;
    return push(v, t);
}

static npred_status memo_put(vm *v, size_t idx)
{
    /* Real pickles number memo slots 0, 1, 2, ...; each put costs at least two
     * bytes, so an index beyond the pickle's length is hostile. */
    if (idx > v->len) return fail(v, NPRED_ERR_FORMAT, "memo index %zu out of range", idx);
    if (v->sn == 0) return fail(v, NPRED_ERR_FORMAT, "stack underflow");
    if (idx >= v->memocap) {
        size_t cap = v->memocap ? v->memocap : 256;
        while (cap <= idx) cap *= 2;
        npred_pk_obj **m = realloc(v->memo, cap * sizeof *m);
        if (!m) return NOMEM(v);
        memset(m + v->memocap, 0, (cap - v->memocap) * sizeof *m);
        v->memo = m;
        v->memocap = cap;
    }
    v->memo[idx] = v->stack[v->sn - 1];
    return NPRED_OK;
}

static npred_status memo_get(vm *v, size_t idx)
{
    if (idx >= v->memocap || !v->memo[idx])
        return fail(v, NPRED_ERR_FORMAT, "memo index %zu was never stored", idx);
    return push(v, v->memo[idx]);
}

static npred_status find_global(vm *v, const char *mod, size_t modlen, const char *name,
                                size_t namelen)
{
    for (size_t i = 0; i < sizeof allowed_globals / sizeof *allowed_globals; i++) {
        if (strlen(allowed_globals[i].module) == modlen &&
            memcmp(allowed_globals[i].module, mod, modlen) == 0 &&
            strlen(allowed_globals[i].name) == namelen &&
            memcmp(allowed_globals[i].name, name, namelen) == 0) {
            npred_pk_obj *o = new_obj(v, NPRED_PK_GLOBAL);
            if (!o) return NOMEM(v);
            o->u.global.which = allowed_globals[i].which;
            o->u.global.dtype = allowed_globals[i].dtype;
            o->u.global.qualname = allowed_globals[i].qualname;
            return push(v, o);
        }
    }
    char a[100], b[100];
    return fail(v, NPRED_ERR_FORMAT,
                "global '%s.%s' is not allowed (only collections.OrderedDict, "
                "torch._utils._rebuild_tensor_v2/_rebuild_parameter and torch.*Storage)",
                printable(a, sizeof a, mod, modlen), printable(b, sizeof b, name, namelen));
}

/* GLOBAL: "module\nname\n" */
static npred_status op_global(vm *v)
{
    const char *line[2];
    size_t n[2];
    for (int k = 0; k < 2; k++) {
        const uint8_t *start = v->p + v->pos;
        const uint8_t *nl = memchr(start, '\n', v->len - v->pos);
        if (!nl) return fail(v, NPRED_ERR_FORMAT, "truncated pickle: unterminated global name");
        line[k] = (const char *)start;
        n[k] = (size_t)(nl - start);
        v->pos += n[k] + 1;
    }
    return find_global(v, line[0], n[0], line[1], n[1]);
}

static int is_int(const npred_pk_obj *o) { return o->kind == NPRED_PK_INT; }

/* persistent id ('storage', storage_type, key, location, numel) */
static npred_status op_binpersid(vm *v)
{
    npred_pk_obj *pid = NULL;
    npred_status s = pop(v, &pid);
    if (s) return s;
    if (pid->kind != NPRED_PK_TUPLE || pid->u.seq.n != 5)
        return fail(v, NPRED_ERR_FORMAT, "persistent id is a %s of %zu items, expected "
                    "('storage', type, key, location, numel)", npred_pk_kind_name(pid->kind),
                    pid->kind == NPRED_PK_TUPLE ? pid->u.seq.n : (size_t)0);
    npred_pk_obj **it = pid->u.seq.items;
    if (it[0]->kind != NPRED_PK_STR || strcmp(it[0]->u.str.s, "storage") != 0)
        return fail(v, NPRED_ERR_UNSUPPORTED, "persistent id kind is not 'storage'");
    if (it[1]->kind != NPRED_PK_GLOBAL || it[1]->u.global.which != NPRED_PK_G_STORAGE)
        return fail(v, NPRED_ERR_FORMAT, "persistent id: storage type is not a torch.*Storage");
    if (it[2]->kind != NPRED_PK_STR || it[2]->u.str.len == 0 ||
        strlen(it[2]->u.str.s) != it[2]->u.str.len || strchr(it[2]->u.str.s, '/'))
        return fail(v, NPRED_ERR_FORMAT, "persistent id: bad storage key");
    if (it[3]->kind != NPRED_PK_STR)
        return fail(v, NPRED_ERR_FORMAT, "persistent id: location is not a string");
    if (!is_int(it[4]) || it[4]->u.i < 0)
        return fail(v, NPRED_ERR_FORMAT, "persistent id: bad element count");
    npred_pk_obj *o = new_obj(v, NPRED_PK_STORAGE);
    if (!o) return NOMEM(v);
    o->u.storage.dtype = it[1]->u.global.dtype;
    o->u.storage.key = it[2]->u.str.s;
    o->u.storage.numel = it[4]->u.i;
    return push(v, o);
}

static npred_status int_tuple(vm *v, const npred_pk_obj *t, const char *what, int *ndim,
                              int64_t *out)
{
    if (t->kind != NPRED_PK_TUPLE)
        return fail(v, NPRED_ERR_FORMAT, "_rebuild_tensor_v2: %s is a %s, expected a tuple",
                    what, npred_pk_kind_name(t->kind));
    if (t->u.seq.n > NPRED_TENSOR_MAXDIM)
        return fail(v, NPRED_ERR_UNSUPPORTED, "_rebuild_tensor_v2: %zu dimensions (at most %d)",
                    t->u.seq.n, NPRED_TENSOR_MAXDIM);
    for (size_t i = 0; i < t->u.seq.n; i++) {
        if (!is_int(t->u.seq.items[i]) || t->u.seq.items[i]->u.i < 0)
            return fail(v, NPRED_ERR_FORMAT, "_rebuild_tensor_v2: %s[%zu] is not a "
                        "non-negative int", what, i);
        out[i] = t->u.seq.items[i]->u.i;
    }
    *ndim = (int)t->u.seq.n;
    return NPRED_OK;
}

static npred_status op_reduce(vm *v)
{
    npred_pk_obj *args = NULL, *fn = NULL;
    npred_status s = pop(v, &args);
    if (!s) s = pop(v, &fn);
    if (s) return s;
    if (fn->kind != NPRED_PK_GLOBAL)
        return fail(v, NPRED_ERR_FORMAT, "cannot call a %s", npred_pk_kind_name(fn->kind));
    if (args->kind != NPRED_PK_TUPLE)
        return fail(v, NPRED_ERR_FORMAT, "arguments of %s are a %s, not a tuple",
                    fn->u.global.qualname, npred_pk_kind_name(args->kind));
    size_t na = args->u.seq.n;
    npred_pk_obj **a = args->u.seq.items;
    switch (fn->u.global.which) {
    case NPRED_PK_G_ORDERED_DICT:
        if (na != 0)
            return fail(v, NPRED_ERR_UNSUPPORTED, "collections.OrderedDict called with %zu "
                        "arguments (only OrderedDict() is supported)", na);
        return push(v, new_obj(v, NPRED_PK_DICT));
    case NPRED_PK_G_REBUILD_PARAMETER:
        if (na != 3 || a[0]->kind != NPRED_PK_TENSOR)
            return fail(v, NPRED_ERR_FORMAT, "torch._utils._rebuild_parameter expects "
                        "(tensor, requires_grad, hooks)");
        return push(v, a[0]);
    case NPRED_PK_G_REBUILD_TENSOR_V2: {
        if (na != 6 && na != 7)
            return fail(v, NPRED_ERR_FORMAT, "torch._utils._rebuild_tensor_v2 called with %zu "
                        "arguments, expected 6 or 7", na);
        if (a[0]->kind != NPRED_PK_STORAGE)
            return fail(v, NPRED_ERR_FORMAT, "_rebuild_tensor_v2: first argument is a %s, "
                        "expected a storage", npred_pk_kind_name(a[0]->kind));
        if (!is_int(a[1]) || a[1]->u.i < 0)
            return fail(v, NPRED_ERR_FORMAT, "_rebuild_tensor_v2: bad storage offset");
        npred_pk_obj *t = new_obj(v, NPRED_PK_TENSOR);
        if (!t) return NOMEM(v);
        int nd_stride = 0;
        s = int_tuple(v, a[2], "size", &t->u.tensor.ndim, t->u.tensor.shape);
        if (!s) s = int_tuple(v, a[3], "stride", &nd_stride, t->u.tensor.stride);
        if (s) return s;
        if (nd_stride != t->u.tensor.ndim)
            return fail(v, NPRED_ERR_FORMAT, "_rebuild_tensor_v2: size has %d dims, stride %d",
                        t->u.tensor.ndim, nd_stride);
        if (a[4]->kind != NPRED_PK_BOOL)
            return fail(v, NPRED_ERR_FORMAT, "_rebuild_tensor_v2: requires_grad is a %s",
                        npred_pk_kind_name(a[4]->kind));
        if (a[5]->kind != NPRED_PK_DICT)
            return fail(v, NPRED_ERR_FORMAT, "_rebuild_tensor_v2: backward hooks are a %s",
                        npred_pk_kind_name(a[5]->kind));
        t->u.tensor.storage = a[0];
        t->u.tensor.offset = a[1]->u.i;
        return push(v, t);
    }
    case NPRED_PK_G_STORAGE:
        break;
    }
    return fail(v, NPRED_ERR_FORMAT, "%s cannot be called", fn->u.global.qualname);
}

static npred_status op_build(vm *v)
{
    npred_pk_obj *state = NULL, *inst = NULL;
    npred_status s = pop(v, &state);
    if (!s) s = top(v, &inst);
    if (s) return s;
    /* torch attaches `_metadata` (per-module versions) to the state_dict
     * OrderedDict as an attribute; attributes are irrelevant here. */
    if (inst->kind == NPRED_PK_DICT &&
        (state->kind == NPRED_PK_DICT || state->kind == NPRED_PK_TUPLE ||
         state->kind == NPRED_PK_NONE))
        return NPRED_OK;
    return fail(v, NPRED_ERR_UNSUPPORTED, "BUILD of a %s with a %s state is not supported",
                npred_pk_kind_name(inst->kind), npred_pk_kind_name(state->kind));
}

static npred_status step(vm *v, int *stop)
{
    v->op_pos = v->pos;
    v->op = v->p[v->pos++];
    npred_status s = NPRED_OK;
    npred_pk_obj *a = NULL, *b = NULL, *c = NULL;
    size_t first = 0;
    switch (v->op) {
    case 0x80: /* PROTO */
        if ((s = need(v, 1))) return s;
        if (v->p[v->pos] > 5)
            return fail(v, NPRED_ERR_UNSUPPORTED, "pickle protocol %d", v->p[v->pos]);
        v->pos++;
        return NPRED_OK;
    case 0x95: /* FRAME: a length hint only */
        if ((s = need(v, 8))) return s;
        v->pos += 8;
        return NPRED_OK;
    case '.':
        if ((s = pop(v, &a))) return s;
        v->pk->root = a;
        *stop = 1;
        return NPRED_OK;
    case '(':
        if (v->mn == v->mcap) {
            size_t cap = v->mcap ? 2 * v->mcap : 16;
            size_t *m = realloc(v->marks, cap * sizeof *m);
            if (!m) return NOMEM(v);
            v->marks = m;
            v->mcap = cap;
        }
        v->marks[v->mn++] = v->sn;
        return NPRED_OK;
    case '}': return push(v, new_obj(v, NPRED_PK_DICT));
    case ']': return push(v, new_obj(v, NPRED_PK_LIST));
    case ')': return push(v, new_obj(v, NPRED_PK_TUPLE));
    case 'N': return push(v, new_obj(v, NPRED_PK_NONE));
    case 0x88:
    case 0x89:
        a = new_obj(v, NPRED_PK_BOOL);
        if (a) a->u.i = v->op == 0x88;
        return push(v, a);
    case 'J':
        if ((s = need(v, 4))) return s;
        s = make_int(v, (int32_t)(uint32_t)rd_le(v->p + v->pos, 4));
        v->pos += 4;
        return s;
    case 'K':
        if ((s = need(v, 1))) return s;
        return make_int(v, v->p[v->pos++]);
    case 'M':
        if ((s = need(v, 2))) return s;
        s = make_int(v, (int64_t)rd_le(v->p + v->pos, 2));
        v->pos += 2;
        return s;
    case 0x8a: { /* LONG1: n bytes of little-endian two's complement */
        if ((s = need(v, 1))) return s;
        int n = v->p[v->pos++];
        if (n > 8) return fail(v, NPRED_ERR_UNSUPPORTED, "integer of %d bytes is too large", n);
        if ((s = need(v, (size_t)n))) return s;
        uint64_t x = n ? rd_le(v->p + v->pos, n) : 0;
        if (n > 0 && n < 8 && (v->p[v->pos + n - 1] & 0x80)) x |= ~(uint64_t)0 << (8 * n);
        v->pos += (size_t)n;
        return make_int(v, (int64_t)x);
    }
    case 'G': { /* BINFLOAT: big-endian double */
        if ((s = need(v, 8))) return s;
        uint64_t bits = 0;
        for (int i = 0; i < 8; i++) bits = (bits << 8) | v->p[v->pos + i];
        v->pos += 8;
        a = new_obj(v, NPRED_PK_FLOAT);
        if (a) memcpy(&a->u.f, &bits, 8);
        return push(v, a);
    }
    case 'X':
        if ((s = need(v, 4))) return s;
        v->pos += 4;
        return make_str(v, (size_t)rd_le(v->p + v->pos - 4, 4));
    case 0x8c:
        if ((s = need(v, 1))) return s;
        return make_str(v, v->p[v->pos++]);
    case 0x8d: {
        if ((s = need(v, 8))) return s;
        uint64_t n = rd_le(v->p + v->pos, 8);
        v->pos += 8;
        if (n > v->len - v->pos)
            return fail(v, NPRED_ERR_FORMAT, "truncated pickle: string of %llu bytes",
                        (unsigned long long)n);
        return make_str(v, (size_t)n);
    }
    case 't':
        if ((s = pop_mark(v, &first))) return s;
        return make_tuple(v, first);
    case 0x85:
    case 0x86:
    case 0x87: {
        size_t n = v->op - 0x84u;
        size_t floor = v->mn ? v->marks[v->mn - 1] : 0;
        if (v->sn - floor < n) return fail(v, NPRED_ERR_FORMAT, "stack underflow");
        return make_tuple(v, v->sn - n);
    }
    case 's':
        if ((s = pop(v, &c)) || (s = pop(v, &b)) || (s = top(v, &a))) return s;
        if (a->kind != NPRED_PK_DICT)
            return fail(v, NPRED_ERR_FORMAT, "SETITEM on a %s", npred_pk_kind_name(a->kind));
        return dict_set(v, a, b, c);
    case 'u':
        if ((s = pop_mark(v, &first))) return s;
        if (first == 0 || (v->mn && first <= v->marks[v->mn - 1]))
            return fail(v, NPRED_ERR_FORMAT, "stack underflow");
        a = v->stack[first - 1];
        if (a->kind != NPRED_PK_DICT)
            return fail(v, NPRED_ERR_FORMAT, "SETITEMS on a %s", npred_pk_kind_name(a->kind));
        if ((v->sn - first) % 2)
            return fail(v, NPRED_ERR_FORMAT, "SETITEMS with an odd number of items");
        for (size_t i = first; i < v->sn; i += 2)
            if ((s = dict_set(v, a, v->stack[i], v->stack[i + 1]))) return s;
        v->sn = first;
        return NPRED_OK;
    case 'a':
        if ((s = pop(v, &b)) || (s = top(v, &a))) return s;
        if (a->kind != NPRED_PK_LIST)
            return fail(v, NPRED_ERR_FORMAT, "APPEND to a %s", npred_pk_kind_name(a->kind));
        return seq_append(v, a, b);
    case 'e':
        if ((s = pop_mark(v, &first))) return s;
        if (first == 0 || (v->mn && first <= v->marks[v->mn - 1]))
            return fail(v, NPRED_ERR_FORMAT, "stack underflow");
        a = v->stack[first - 1];
        if (a->kind != NPRED_PK_LIST)
            return fail(v, NPRED_ERR_FORMAT, "APPENDS to a %s", npred_pk_kind_name(a->kind));
        for (size_t i = first; i < v->sn; i++)
            if ((s = seq_append(v, a, v->stack[i]))) return s;
        v->sn = first;
        return NPRED_OK;
    case 'q':
        if ((s = need(v, 1))) return s;
        return memo_put(v, v->p[v->pos++]);
    case 'r':
        if ((s = need(v, 4))) return s;
        v->pos += 4;
        return memo_put(v, (size_t)rd_le(v->p + v->pos - 4, 4));
    case 0x94:
        if ((s = memo_put(v, v->memo_next))) return s;
        v->memo_next++;
        return NPRED_OK;
    case 'h':
        if ((s = need(v, 1))) return s;
        return memo_get(v, v->p[v->pos++]);
    case 'j':
        if ((s = need(v, 4))) return s;
        v->pos += 4;
        return memo_get(v, (size_t)rd_le(v->p + v->pos - 4, 4));
    case 'c': return op_global(v);
    case 0x93: /* STACK_GLOBAL: module and name strings on the stack */
        if ((s = pop(v, &b)) || (s = pop(v, &a))) return s;
        if (a->kind != NPRED_PK_STR || b->kind != NPRED_PK_STR)
            return fail(v, NPRED_ERR_FORMAT, "module and name are not strings");
        return find_global(v, a->u.str.s, a->u.str.len, b->u.str.s, b->u.str.len);
    case 'R': return op_reduce(v);
    case 'b': return op_build(v);
    case 'Q': return op_binpersid(v);
    }
    return fail(v, NPRED_ERR_FORMAT, "opcode not allowed in a checkpoint");
}

npred_status npred_pickle_load(const void *buf, size_t len, const char *name, npred_pickle **out)
{
    *out = NULL;
    npred_pickle *pk = calloc(1, sizeof *pk);
    if (!pk) return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", name);
    vm v = {.p = buf, .len = len, .name = name, .pk = pk};
    npred_status s = NPRED_OK;
    int stop = 0;
    while (!s && !stop) {
        if (v.pos >= v.len) {
            s = npred_errorf(NPRED_ERR_FORMAT, "%s: truncated pickle: end of data after %zu "
                             "bytes without a STOP opcode", name, len);
            break;
        }
        s = step(&v, &stop);
    }
    free(v.stack);
    free(v.marks);
    free(v.memo);
    if (s) {
        npred_pickle_free(pk);
        return s;
    }
    *out = pk;
    return NPRED_OK;
}

const npred_pk_obj *npred_pickle_root(const npred_pickle *p) { return p->root; }

void npred_pickle_free(npred_pickle *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->nobj; i++) {
        npred_pk_obj *o = p->objs[i];
        switch (o->kind) {
        case NPRED_PK_STR: free(o->u.str.s); break;
        case NPRED_PK_TUPLE:
        case NPRED_PK_LIST: free(o->u.seq.items); break;
        case NPRED_PK_DICT:
            free(o->u.dict.keys);
            free(o->u.dict.vals);
            break;
        default: break;
        }
        free(o);
    }
    free(p->objs);
    free(p);
}
