"""What the tools share that is not the method: files written safely, image IO, and a planned dataset's folders,
plans, config and fold split."""
