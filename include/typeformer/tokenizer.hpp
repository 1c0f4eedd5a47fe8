// typeformer/tokenizer.hpp: umbrella for users: every tokenizer and the chat templates.
//   tokenizer/bpe.hpp            tfm::bpe_tokenizer: byte-level BPE (GPT-2, tiktoken, HF
//   tokenizer.json) tokenizer/bpe_trainer.hpp    tfm::bpe_trainer: train a byte-level BPE
//   vocabulary tokenizer/sentencepiece.hpp  tfm::sentencepiece_tokenizer: SentencePiece BPE and
//   Unigram tokenizer/wordpiece.hpp      tfm::wordpiece_tokenizer: BERT's WordPiece
//   tokenizer/chat_template.hpp  tfm::chat_template: ChatML, Llama 2, Llama 3
//   tokenizer/jinja.hpp          tfm::jinja_chat_template: a model's own Jinja chat template
// Tokenizers use no tensors; typeformer/typeformer.hpp leaves them out because they cost more
// to compile than the tensor library itself (docs/design.md, "Umbrella headers").
#pragma once

#include "typeformer/tokenizer/bpe.hpp"
#include "typeformer/tokenizer/bpe_trainer.hpp"
#include "typeformer/tokenizer/chat_template.hpp"
#include "typeformer/tokenizer/jinja.hpp"
#include "typeformer/tokenizer/sentencepiece.hpp"
#include "typeformer/tokenizer/wordpiece.hpp"
