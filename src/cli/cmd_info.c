/*
 * cmd_info.c - `mica info MODEL`: the GGUF header, every metadata key with its type and
 * value, and the tensor table (name, type, shape, offset, size). Works on any valid GGUF,
 * whether or not mica can run its architecture.
 */
#include "cli.h"
#include "gguf/gguf.h"

#include <stdio.h>
#include <string.h>

static const char info_help[] =
    "usage: mica info MODEL.gguf\n"
    "\n"
    "Prints the GGUF version, every metadata key (type and value) and the tensor table\n"
    "(name, type, shape, offset in the data section, bytes).\n";

static void print_kvs(const gguf_file *f)
{
    char val[256];
    printf("metadata: %llu keys\n", (unsigned long long)f->n_kv);
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        gguf_kv_format(kv, val, sizeof val);
        printf("  %-48.*s %-8s %s\n", (int)kv->key.len, kv->key.ptr, gguf_vtype_name(kv->type),
               val);
    }
}

static void print_tensors(const gguf_file *f)
{
    uint64_t total = 0, params = 0;
    printf("tensors: %llu\n", (unsigned long long)f->n_tensors);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        char shape[96];
        int o = snprintf(shape, sizeof shape, "[");
        for (uint32_t d = 0; d < t->n_dims && o < (int)sizeof shape; d++)
            o += snprintf(shape + o, sizeof shape - (size_t)o, "%s%lld", d ? ", " : "",
                          (long long)t->ne[d]);
        if (o < (int)sizeof shape) snprintf(shape + o, sizeof shape - (size_t)o, "]");
        printf("  %-40s %-6s %-22s offset %-10llu %llu bytes\n", t->name, gguf_ttype_name(t->type),
               shape, (unsigned long long)t->offset, (unsigned long long)t->nbytes);
        total += t->nbytes;
        params += (uint64_t)gguf_tensor_nelements(t);
    }
    printf("total: %llu parameters, %.2f MiB of tensor data\n", (unsigned long long)params,
           (double)total / (1024.0 * 1024.0));
}

/* A note for each mica extension type the file uses (FP8_E4M3): mica reads it, llama.cpp
 * and other GGUF readers refuse the file. */
static void print_extension_notes(const gguf_file *f)
{
    for (uint32_t type = 0; type < GGUF_T_COUNT; type++) {
        if (!gguf_ttype_is_extension(type)) continue;
        uint64_t n = 0;
        for (uint64_t i = 0; i < f->n_tensors; i++) n += f->tensors[i].type == type;
        if (n)
            printf("note: %llu tensor(s) use %s (type %u), a mica extension type "
                   "(docs/fp8.md): other GGUF readers such as llama.cpp refuse this file\n",
                   (unsigned long long)n, gguf_ttype_name(type), type);
    }
}

int cmd_info(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        fputs(info_help, stdout);
        return 0;
    }
    if (argc != 2) {
        fputs(info_help, stderr);
        return 1;
    }
    gguf_file *f;
    mica_err err;
    if (gguf_open(&f, argv[1], &err)) return cli_fail_err(&err);
    printf("file: %s\nGGUF version %u, alignment %llu, data at offset %llu, %llu bytes\n", argv[1],
           f->version, (unsigned long long)f->alignment, (unsigned long long)f->data_offset,
           (unsigned long long)f->size);
    print_kvs(f);
    print_tensors(f);
    print_extension_notes(f);
    gguf_close(f);
    return 0;
}
