/*
 * main.c - the `mica` command: dispatches to one subcommand per file in src/cli/.
 */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        printf("usage: mica <command> [options]\n");
        return argc < 2 ? 1 : 0;
    }
    fprintf(stderr, "mica: unknown command '%s'\n", argv[1]);
    return 1;
}
