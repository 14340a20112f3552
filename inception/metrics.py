"""Metric writers: JSON lines + TensorBoard (clu), and the progress bar (tqdm)."""
import json
import math
import os
import sys
import time
from typing import Any, Mapping

import tqdm

from inception import workdir as workdir_lib



def _plain(value):
  value = float(value) if hasattr(value, '__float__') else value
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no NaN/Inf
  return value


class JsonlWriter:
  """Appends one JSON object per ``write_scalars`` call: ``{"step", ...}``.

  Implements clu's ``MetricWriter`` interface (registered as a virtual
  subclass in ``create_writer``).

  Each line is flushed and fsynced as written, so a killed run loses no line
  it has logged; ``truncate_after`` removes what a resumed run will redo.
  Only scalars and hparams are kept; other summaries go to TensorBoard.
  """

  def __init__(self, path: str):
    self._path = path
    self._file = open(path, 'a', encoding='utf-8')

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    record = {'step': int(step), **{k: _plain(v) for k, v in scalars.items()}}
    self._file.write(json.dumps(record) + '\n')
    self._file.flush()
    os.fsync(self._file.fileno())

  def write_hparams(self, hparams):
    pass  # The resolved config is saved whole in config.json.

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()


def read_jsonl(path: str) -> list[dict]:
  """All complete records of a metrics file (a torn last line is ignored)."""
  if not os.path.exists(path):
    return []
  records = []
  with open(path, encoding='utf-8') as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        break  # only a kill mid-write leaves a partial line, and only last
  return records


def truncate_after(path: str, step: int):
  """Keeps the records with ``step <= step``, atomically.

  A resumed run restarts from its checkpoint at ``step``; records the killed
  run wrote after it would otherwise appear twice.
  """
  records = [r for r in read_jsonl(path) if r['step'] <= step]
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    f.writelines(json.dumps(r) + '\n' for r in records)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def create_writer(workdir: str, is_main: bool):
  """A clu MultiWriter: JSONL + TensorBoard on the main process; none elsewhere.

  clu (and TensorFlow, behind its TensorBoard writer) is imported here, not
  at module import, so that reading metrics (report, notebooks) stays light.
  """
  from inception import tf_quiet  # pylint: disable=g-import-not-at-top
  tf_quiet.load()  # before clu imports TF itself
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  metric_writers.MetricWriter.register(JsonlWriter)
  if not is_main:
    return metric_writers.MultiWriter([])
  return metric_writers.MultiWriter([
      JsonlWriter(workdir_lib.path(workdir, workdir_lib.METRICS)),
      metric_writers.SummaryWriter(workdir),
  ])


class Progress:
  """A tqdm bar with loss and images/s; plain log lines when not on a TTY."""

  def __init__(self, total: int, initial: int, batch_size: int,
               enabled: bool = True):
    self._batch = batch_size
    self._tty = enabled and sys.stderr.isatty()
    self._bar = tqdm.tqdm(total=total, initial=initial, unit='step',
                          dynamic_ncols=True, disable=not self._tty,
                          smoothing=0.1)
    self._enabled = enabled
    self._total = total
    self._start = time.perf_counter()
    self._initial = initial

  def update(self, step: int, n: int = 1):
    del step
    self._bar.update(n)

  def log(self, step: int, loss: float, images_per_s: float):
    """Shows the latest window's loss and throughput."""
    if self._tty:
      self._bar.set_postfix(loss=f'{loss:.4f}', img_s=f'{images_per_s:.0f}')
    elif self._enabled:
      done = step - self._initial
      rate = done / max(time.perf_counter() - self._start, 1e-9)
      eta = (self._total - step) / rate if rate else float('inf')
      print(f'step {step}/{self._total}  loss {loss:.4f}  '
            f'{images_per_s:.0f} img/s  eta {eta:.0f}s', flush=True)

  def write(self, message: str):
    """Prints above the bar without breaking it."""
    if self._enabled:
      self._bar.write(message) if self._tty else print(message, flush=True)

  def close(self):
    self._bar.close()
