"""The training recipe: data, tokenizer, the training loop and its run folder, evaluation."""
