"""The CIFAR-10 bottleneck ablation: four arms, several seeds, equal protocol.

  make ablation   # unpacks the JPEG training split to /tmp/cifar10, then:
  python sweep.py --config configs/inception_cifar.py:ablation \
      --sweep configs/sweeps/cifar10_ablation.py --workdir results/cifar10_ablation \
      --config.dataset=folder:/tmp/cifar10
  python report.py results/cifar10_ablation

Arms (GoogLeNet-CIFAR at width 1/8, the ``:ablation`` recipe: 4 one-cycle
epochs at batch 256, train[:90%] / eval train[90%:]):
  * bottleneck: Table 1's module (1x1 reductions, pool projection);
  * naive, equal MACs: Fig. 2a's module, narrowed by bisection on the FLOP
    accounting to the bottleneck network's MACs per image (within 5%);
  * naive, same widths: Fig. 2a at the bottleneck network's widths (~10.7x
    the MACs; on a 2-core CPU ~3.6x the time of the others);
  * separable: the bottleneck module with depthwise-separable 3x3/5x5.

The three comparison arms run seed by seed, so a sweep cut short still holds
every one of them at equal seeds; the costly same-widths reference runs last.
Result (4 epochs, one H200 GPU): results/cifar10_ablation/README.md.
"""
from configs.sweeps import equal_macs

SEEDS = (0, 1, 2, 3, 4)  # five per arm: enough for a Student-t CI of the difference


def arms(config) -> dict[str, dict]:
  """Arm name -> its model overrides."""
  width = config.model.width
  naive_width, _, _ = equal_macs.equal_macs_width(config)
  model = lambda bottleneck, separable, w: {
      'model.bottleneck': bottleneck, 'model.pool_proj': bottleneck,
      'model.separable': separable, 'model.width': w}
  return {
      'bottleneck': model(True, False, width),
      'naive_equal_macs': model(False, False, naive_width),
      'naive_same_widths': model(False, False, width),
      'separable': model(True, True, width),
  }


def get_sweep(config):
  """Returns one dict of overrides per run: comparison arms seed-major first."""
  arm_overrides = arms(config)
  reference = arm_overrides.pop('naive_same_widths')
  runs = [{**overrides, 'seed': seed}
          for seed in SEEDS for overrides in arm_overrides.values()]
  return runs + [{**reference, 'seed': seed} for seed in SEEDS]
