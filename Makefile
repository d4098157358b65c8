# rivet - build. `make` builds build/rivet; `make unit` builds and runs the unit tests;
# `make SAN=1 BUILD=build-asan` builds with ASan+UBSan. Source files are found by wildcard,
# so a new module needs no edit here.
BUILD   ?= build
CC      ?= cc
SAN     ?=
PKGS    := libfyaml libpcre2-8 libcurl jansson libssl libcrypto
DEPFLAGS = -MMD -MP
WARN    := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Wno-missing-field-initializers \
           -Wstrict-prototypes -Wpointer-arith -Wvla
CFLAGS  ?= -O2 -g
ifeq ($(SAN),1)
CFLAGS  := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDSAN   := -fsanitize=address,undefined
endif
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE -pthread $(WARN) -Isrc $(shell pkg-config --cflags $(PKGS)) $(CFLAGS)
LDLIBS  := $(shell pkg-config --libs $(PKGS)) -lpthread -lm

SRCS    := $(filter-out src/cli/main.c,$(sort $(shell find src -name '*.c')))
OBJS    := $(SRCS:%.c=$(BUILD)/%.o)
TSRCS   := $(sort $(wildcard tests/unit/test_*.c))
TBINS   := $(TSRCS:tests/unit/%.c=$(BUILD)/tests/%)
FSRCS   := $(sort $(wildcard fuzz/fuzz_*.c))
FBINS   := $(FSRCS:fuzz/fuzz_%.c=$(BUILD)/fuzz/replay_%)

.PHONY: all unit fuzz clean
all: $(BUILD)/rivet

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(DEPFLAGS) -c $< -o $@

$(BUILD)/librivet.a: $(OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/rivet: $(BUILD)/src/cli/main.o $(BUILD)/librivet.a
	$(CC) $(LDSAN) -pthread -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/librivet.a
	@mkdir -p $(dir $@)
	$(CC) $(LDSAN) -pthread -o $@ $^ $(LDLIBS)

# Fuzz targets linked with a plain driver: the committed corpora replay as ordinary tests.
$(BUILD)/fuzz/replay_%: $(BUILD)/fuzz/fuzz_%.o $(BUILD)/fuzz/replay.o $(BUILD)/librivet.a
	@mkdir -p $(dir $@)
	$(CC) $(LDSAN) -pthread -o $@ $^ $(LDLIBS)

unit: $(TBINS) $(FBINS)
	@tests/unit/run.sh $(TBINS) $(FBINS)

# Real fuzzers (clang + libFuzzer): build-fuzz/fuzz_<name>; run e.g.
#   build-fuzz/fuzz_http1 -max_total_time=60 fuzz/corpus/http1
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -pthread -Isrc $(shell pkg-config --cflags $(PKGS)) -g -O1 \
               -fsanitize=fuzzer-no-link,address,undefined
fuzz:
	@mkdir -p build-fuzz
	@for t in $(FSRCS:fuzz/fuzz_%.c=%); do \
	  clang $(FUZZ_CFLAGS) -fsanitize=fuzzer fuzz/fuzz_$$t.c $(SRCS) -o build-fuzz/fuzz_$$t $(LDLIBS) || exit 1; \
	  echo "built build-fuzz/fuzz_$$t"; done

clean:
	rm -rf build build-asan build-fuzz

-include $(OBJS:.o=.d) $(BUILD)/src/cli/main.d $(TSRCS:tests/unit/%.c=$(BUILD)/tests/unit/%.d) \
         $(FSRCS:%.c=$(BUILD)/%.d)
