"""The tiny, fast swarm the validator process tests run on: one list, so the tests agree."""

VALIDATOR_TEST_FLAGS = [
    "--model.preset", "tiny", "--data.seq_len", "64", "--train.batch_size", "4",
    "--train.inner_steps", "20", "--train.matchmaking_time", "2",
    "--train.averaging_timeout", "20", "--train.log_every", "5", "--train.eval_batches", "1",
    "--train.checkpoint_every", "0", "--train.lr", "1e-3", "--train.warmup_epochs", "0",
    "--wandb.off"]
