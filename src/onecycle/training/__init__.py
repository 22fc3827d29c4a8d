"""One job of the workflow on a device: a training run or an LR range test, from its config to its files.

- run: `train(cfg, out_dir)`, the run in named phases (set up or resume, one epoch, evaluate,
  finish), full-test-set evaluation, divergence recorded rather than crashed;
- checkpoints, schedule_setup, device: what a run saves to resume bit for bit, where its LR
  bounds come from (the config or a range test), the device and numerics mode;
- optim: SGD as the papers ran it (PyTorch's or Caffe's update rule, prototxt multipliers);
- distributed: the data-parallel form under torchrun; range_test_job: `onecycle range-test`;
  advise_job: `onecycle advise`, onecycle.advise on a run config.
"""
