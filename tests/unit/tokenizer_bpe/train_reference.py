#!/usr/bin/env python3
"""Trains the Hugging Face `tokenizers` byte-level BPE (the reference for bpe_trainer) and saves
tokenizer.json. Single-threaded (TOKENIZERS_PARALLELISM=false) so runs are comparable.

usage: train_reference.py CORPUS_FILE VOCAB_SIZE MIN_FREQUENCY OUT_JSON [SPECIAL...]
Exit status 77 (with a SKIP line) when `tokenizers` is missing. Prints the training time.
"""
import os
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
try:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    import tokenizers
except ImportError as e:
    print("SKIP: python package tokenizers is needed (pip install tokenizers): %s" % e)
    sys.exit(77)

corpus, vocab_size, min_freq, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_freq, special_tokens=sys.argv[5:],
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
t0 = time.perf_counter()
tok.train([corpus], trainer)
dt = time.perf_counter() - t0
tok.save(out)
print("tokenizers %s trained vocab %d in %.3f s" % (tokenizers.__version__, tok.get_vocab_size(), dt))
