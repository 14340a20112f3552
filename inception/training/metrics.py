"""Metric writers: JSON lines + TensorBoard (clu), and the progress bar (tqdm)."""
import json
import math
import os
import sys
import time
from typing import Any, Mapping

import tqdm
from absl import logging

from inception.training import workdir as workdir_lib



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


def _parse(line: str):
  """A record (a dict with an integer ``step``), or None."""
  try:
    record = json.loads(line)
  except json.JSONDecodeError:
    return None
  if not isinstance(record, dict) or not isinstance(record.get('step'), int):
    return None
  return record


def read_jsonl(path: str) -> list[dict]:
  """Every record of a metrics file; lines that are not records are skipped."""
  if not os.path.exists(path):
    return []
  with open(path, encoding='utf-8', errors='replace') as f:
    return [r for r in map(_parse, f) if r is not None]


def append_record(path: str, record: dict):
  """Appends one record (flushed) to a metrics file."""
  with open(path, 'a', encoding='utf-8') as f:
    f.write(json.dumps(record) + '\n')


def truncate_after(path: str, step: int):
  """Drops the records after ``step``, atomically; keeps everything else.

  A resumed run restarts from its checkpoint at ``step``; records the killed
  run wrote after it would otherwise appear twice. Lines that cannot be
  parsed (a torn write, a hand edit) are never deleted: they are moved to
  ``<path>.unparsed`` with a warning, and every record at or before ``step``
  is kept, wherever it is in the file.
  """
  if not os.path.exists(path):
    return
  with open(path, encoding='utf-8', errors='replace') as f:
    lines = f.read().splitlines()
  kept, unparsed, dropped = [], [], 0
  for line in lines:
    if not line.strip():
      continue
    record = _parse(line)
    if record is None:
      unparsed.append(line)
    elif record['step'] <= step:
      kept.append(line)
    else:
      dropped += 1
  if not unparsed and not dropped:
    return
  if unparsed:
    with open(path + '.unparsed', 'a', encoding='utf-8') as f:
      f.writelines(line + '\n' for line in unparsed)
    logging.warning('%s: %d line(s) that are not metric records were moved '
                    'to %s.unparsed', path, len(unparsed), path)
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    f.writelines(line + '\n' for line in kept)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def create_writer(workdir: str, is_main: bool):
  """JSONL + TensorBoard (clu) on the main process; a writer of nothing elsewhere.

  clu (and TensorFlow, behind its TensorBoard writer) is imported here, not
  at module import, so that reading metrics (report, notebooks) stays light.
  Where TensorFlow is not installed (a JAX-only GPU image), clu's writers
  cannot be imported either; the run then writes metrics.jsonl alone.
  """
  from inception.data import tf_quiet  # pylint: disable=g-import-not-at-top
  if not is_main:
    return _NoWriter()
  jsonl = JsonlWriter(workdir_lib.path(workdir, workdir_lib.METRICS))
  if not tf_quiet.available():
    logging.warning('TensorFlow is not installed: no TensorBoard events; '
                    'metrics go to %s only', workdir_lib.METRICS)
    return jsonl
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  metric_writers.MetricWriter.register(JsonlWriter)
  return metric_writers.MultiWriter([jsonl,
                                     metric_writers.SummaryWriter(workdir)])


class _NoWriter:
  """Drops every write: the metric writer of non-main processes."""

  def __getattr__(self, name):
    return lambda *args, **kwargs: None


class Progress:
  """A tqdm bar with loss and images/s; plain log lines when not on a TTY."""

  def __init__(self, total: int, initial: int, batch_size: int,
               enabled: bool = True):
    self._batch = batch_size
    self._tty = enabled and sys.stderr.isatty()
    # tqdm's own rate and ETA would count the compiling first step; ours
    # (in the postfix) start after it.
    self._bar = tqdm.tqdm(total=total, initial=initial, unit='step',
                          dynamic_ncols=True, disable=not self._tty,
                          bar_format='{l_bar}{bar}| {n_fmt}/{total_fmt} '
                          '[{elapsed}{postfix}]')
    self._enabled = enabled
    self._total = total
    self._start = time.perf_counter()
    self._initial = initial

  def start_clock(self, step: int):
    """Restarts the ETA's clock at ``step`` (after compilation)."""
    self._start, self._initial = time.perf_counter(), step

  def update(self, step: int, n: int = 1):
    del step
    self._bar.update(n)

  def eta(self, step: int) -> float:
    """Seconds left at the rate measured since ``start_clock`` (inf: none)."""
    done = step - self._initial
    rate = done / max(time.perf_counter() - self._start, 1e-9)
    return (self._total - step) / rate if rate > 0 else float('inf')

  def log(self, step: int, loss: float, images_per_s: float):
    """Shows the latest window's loss, throughput and the ETA.

    Before any step is timed (the first window holds the compile) both read
    '-' rather than nan and inf.
    """
    eta = self.eta(step)
    rate = f'{images_per_s:.0f}' if math.isfinite(images_per_s) else '-'
    eta = f'{eta:.0f}s' if math.isfinite(eta) else '-'
    if self._tty:
      self._bar.set_postfix(loss=f'{loss:.4f}', img_s=rate, eta=eta)
    elif self._enabled:
      print(f'step {step}/{self._total}  loss {loss:.4f}  {rate} img/s  '
            f'eta {eta}', flush=True)

  def write(self, message: str):
    """Prints above the bar without breaking it."""
    if self._enabled:
      self._bar.write(message) if self._tty else print(message, flush=True)

  def close(self):
    self._bar.close()
