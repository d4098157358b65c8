/*
 * replay.c - runs a libFuzzer target over files without a fuzzing engine, so the committed
 * seed corpora (and every crash input added to them) are plain regression tests in CI.
 * usage: replay_<target> FILE|DIR...   (TAP output, exit 1 if a file cannot be read)
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int n, bad;

static void run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("not ok %d - cannot open %s\n", ++n, path);
        bad = 1;
        return;
    }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(len > 0 ? (size_t)len : 1);
    size_t got = buf ? fread(buf, 1, (size_t)len, f) : 0;
    fclose(f);
    /* an exact-size heap copy lets ASan catch any read past the input */
    LLVMFuzzerTestOneInput(buf, got);
    free(buf);
    printf("ok %d - %s\n", ++n, path);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        struct stat sb;
        if (stat(argv[i], &sb) == 0 && S_ISDIR(sb.st_mode)) {
            struct dirent **ents;
            int m = scandir(argv[i], &ents, NULL, alphasort);
            for (int j = 0; j < m; j++) {
                if (ents[j]->d_name[0] != '.') {
                    char p[4096];
                    snprintf(p, sizeof p, "%s/%s", argv[i], ents[j]->d_name);
                    run_file(p);
                }
                free(ents[j]);
            }
            free(ents);
        } else {
            run_file(argv[i]);
        }
    }
    printf("1..%d\n", n);
    return bad;
}
