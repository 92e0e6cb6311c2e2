"""Pure, jitted training and evaluation of the ConvNet, with fingerprints computed inside the step.

The NNX model is split once into a static ``graphdef`` and pure-dict pytrees (parameters, batch
statistics); a :class:`TrainState` carries those plus the optax state and the step counter, so
``train_step(state, batch, key) -> (state, metrics)`` is a pure ``jax.jit``-ted function:

    key -> per-example keys -> defect_fn (vmap, optional) -> fingerprint_fn (vmap) -> (B, 64, 64, 3)
        -> ConvNet (train mode: dropout, batch-norm batch statistics) -> softmax cross-entropy
        -> grads w.r.t. parameters -> optax update.

:func:`fit` is the host loop (shuffled epochs, tqdm, tracking, Orbax checkpoints per epoch with
resume, final val/test metrics).  The shipped model format (``model.msgpack`` + ``model_card.json``) is
:mod:`crystaljax.learn.checkpoint`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from crystaljax.config import OptimConfig  # the schema lives in crystaljax.config
from crystaljax.learn import evaluate as _ev
from crystaljax.learn import tracking as _tracking
from crystaljax.learn.model import ConvNet, ModelConfig, build_model
from crystaljax.structure import Structure

FingerprintFn = Callable[[Structure], jax.Array]  # Structure -> (64, 64, 3) float32
DefectFn = Callable[[jax.Array, Structure], Structure]  # (key, Structure) -> Structure



# --------------------------------------------------------------------------------------------
# configuration and state


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    """The optax transformation named by ``cfg``."""
    name = cfg.name.lower()
    if name in ("adam", "adamw"):
        if cfg.weight_decay > 0 or name == "adamw":
            return optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay)
        return optax.adam(cfg.learning_rate)
    if name == "sgd":
        tx = optax.sgd(cfg.learning_rate, momentum=0.9)
        if cfg.weight_decay > 0:
            tx = optax.chain(optax.add_decayed_weights(cfg.weight_decay), tx)
        return tx
    raise ValueError(f"unknown optimiser {cfg.name!r}; choose 'adam', 'adamw' or 'sgd'")


class TrainState(NamedTuple):
    """Everything that changes during training, as one pytree.

    params:      nested dict of parameter arrays (``nnx.to_pure_dict`` of the ``nnx.Param`` state).
    batch_stats: nested dict of the remaining model state (batch-norm running mean/var).
    opt_state:   optax state over ``params``.
    step:        () int32, optimiser steps taken.
    """

    params: Any
    batch_stats: Any
    opt_state: Any
    step: jax.Array


def split_model(model: ConvNet):
    """``model -> (graphdef, params, batch_stats)`` with the two states as pure nested dicts."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(rest)


def merge_model(graphdef, params, batch_stats) -> ConvNet:
    """Inverse of :func:`split_model` (a fresh NNX module; safe inside jit/grad)."""
    return nnx.merge(graphdef, params, batch_stats)


def init_state(model_cfg: ModelConfig, optimizer: optax.GradientTransformation, seed: int = 0):
    """A fresh model seeded by ``seed`` -> ``(graphdef, TrainState)``."""
    graphdef, params, batch_stats = split_model(build_model(model_cfg, seed))
    # own buffers: the loop donates the state, and build_model may hand out cached initial arrays
    params, batch_stats = jax.tree.map(jnp.copy, (params, batch_stats))
    state = TrainState(params, batch_stats, optimizer.init(params), jnp.zeros((), jnp.int32))
    return graphdef, state


def apply_model(graphdef, params, batch_stats, images: jax.Array, *, train: bool = False, key=None):
    """images (B, H, W, C) -> (logits (B, n_classes), new batch_stats).  Traceable.

    train=True: dropout with ``key`` and batch statistics (running averages updated);
    train=False: running averages, no dropout (batch_stats returned unchanged).
    """
    model = merge_model(graphdef, params, batch_stats)
    if not train:
        return model(images, train=False), batch_stats
    logits = model(images, train=True, rngs=nnx.Rngs(dropout=key))
    return logits, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))


def _images(structures, fingerprint_fn, defect_fn=None, key=None):
    """Batched Structure (B, n_max, ...) -> images (B, H, W, C); defects first if given."""
    if defect_fn is not None:
        keys = jax.random.split(key, structures.positions.shape[0])
        structures = jax.vmap(defect_fn)(keys, structures)
    return jax.vmap(fingerprint_fn)(structures)


# --------------------------------------------------------------------------------------------
# steps


def make_train_step(graphdef, optimizer: optax.GradientTransformation, fingerprint_fn: FingerprintFn | None,
                    defect_fn: DefectFn | None = None, *, jit: bool = True, donate: bool = False):
    """Build ``train_step(state, batch, key) -> (state, metrics)``.

    ``donate=True`` lets XLA reuse the input state's buffers for the output (the caller must not use
    the old state afterwards).

    batch = (structures, labels): a batched ``Structure`` (B, n_max, ...) and labels (B,) int32.
    If ``fingerprint_fn`` is None the first element is taken to be precomputed images (B, H, W, C)
    (and ``defect_fn`` must be None).  key: one ``jax.random`` key per step;
    ``k_defect, k_dropout = jax.random.split(key)`` and ``k_defect`` is split into one key per
    example.  metrics: loss, accuracy, grad_norm (() float32 each).
    """
    if fingerprint_fn is None and defect_fn is not None:
        raise ValueError("defect_fn needs structures, so fingerprint_fn must be given")

    def train_step(state: TrainState, batch, key):
        inputs, labels = batch
        k_defect, k_dropout = jax.random.split(key)
        if fingerprint_fn is None:
            images = inputs
        else:
            images = _images(inputs, fingerprint_fn, defect_fn, k_defect)
        images = jax.lax.stop_gradient(images)

        def loss_fn(params):
            logits, new_stats = apply_model(graphdef, params, state.batch_stats, images, train=True, key=k_dropout)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, (logits, new_stats)

        (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss,
            "accuracy": jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32)),
            "grad_norm": optax.tree.norm(grads),
        }
        return TrainState(params, new_stats, opt_state, state.step + 1), metrics

    if not jit:
        return train_step
    return jax.jit(train_step, donate_argnums=(0,) if donate else ())


METRIC_NAMES = ("loss", "accuracy", "grad_norm")


def zero_sums() -> dict:
    """Running metric sums carried on device between steps: METRIC_NAMES and "steps" (() float32 each)."""
    return {k: jnp.zeros((), jnp.float32) for k in (*METRIC_NAMES, "steps")}


def _rows(tree, idx):
    """Rows ``idx`` (B,) of every leaf's leading axis (traceable gather on device)."""
    return jax.tree.map(lambda x: jnp.take(x, idx, axis=0), tree)


def make_indexed_train_step(graphdef, optimizer: optax.GradientTransformation, fingerprint_fn: FingerprintFn | None,
                            defect_fn: DefectFn | None = None, *, donate: bool = True):
    """Build the jitted loop step ``step(state, sums, data, labels, order, row, key) -> (state, sums)``.

    data: the whole batched Structure (N, n_max, ...) (or images (N, H, W, C)) and labels (N,) int32,
    resident on the device; order (S, B) int32 rows of the epoch's S batches; row: () int32, the batch to
    take.  The batch is gathered inside the jit, the step key is ``fold_in(key, state.step)`` and the
    metrics are added to ``sums`` (see :func:`zero_sums`), so nothing waits for the device between steps.
    ``donate``: the state and sums buffers are reused for the outputs.
    """
    inner = make_train_step(graphdef, optimizer, fingerprint_fn, defect_fn, jit=False)

    def step(state, sums, data, labels, order, row, key):
        idx = order[row]
        new_state, m = inner(state, (_rows(data, idx), jnp.take(labels, idx)), jax.random.fold_in(key, state.step))
        sums = {k: sums[k] + m[k] for k in METRIC_NAMES} | {"steps": sums["steps"] + 1}
        return new_state, sums

    return jax.jit(step, donate_argnums=(0, 1) if donate else ())


def epoch_order(key, train_idx, epoch: int, batch_size: int) -> jax.Array:
    """The training rows of one epoch as (steps, batch_size) int32: ``train_idx`` (n,) permuted by
    ``fold_in(key, epoch)``; the last batch is filled up from the start of the permutation, so every
    step has the same shape.  Computed on the device (no host round trip)."""
    train_idx = jnp.asarray(train_idx, jnp.int32)
    n = train_idx.shape[0]
    steps = -(-n // batch_size)
    perm = jax.random.permutation(jax.random.fold_in(key, epoch), train_idx)
    return perm[jnp.arange(steps * batch_size) % n].reshape(steps, batch_size)


def make_eval_step(graphdef, fingerprint_fn: FingerprintFn | None, *, jit: bool = True):
    """Build ``eval_step(state, structures) -> probabilities (B, n_classes)`` (eval mode).

    ``state`` is anything with ``.params`` and ``.batch_stats`` (a TrainState or a loaded
    ``Classifier``).  With ``fingerprint_fn=None`` the input is precomputed images (B, H, W, C).
    """

    def eval_step(state, structures):
        images = structures if fingerprint_fn is None else _images(structures, fingerprint_fn)
        logits, _ = apply_model(graphdef, state.params, state.batch_stats, images, train=False)
        return jax.nn.softmax(logits, axis=-1)

    return jax.jit(eval_step) if jit else eval_step


@partial(jax.jit, static_argnums=0)
def _predict_images(graphdef, params, batch_stats, images):
    logits, _ = apply_model(graphdef, params, batch_stats, images, train=False)
    return jax.nn.softmax(logits, axis=-1)


def _padded_batches(n: int, batch_size: int):
    """Yield (index array of length batch_size, number of real rows); the last batch wraps/pads."""
    for start in range(0, n, batch_size):
        real = min(batch_size, n - start)
        yield start + np.arange(batch_size) % real, real


def predict_from_fingerprints(graphdef, state, images, batch_size: int = 256) -> np.ndarray:
    """Precomputed images (N, H, W, C) -> probabilities (N, n_classes) numpy, eval mode.

    ``state`` has ``.params`` and ``.batch_stats`` (e.g. a TrainState).  Fixed-size batches
    (the last one padded) so one compilation serves any N.
    """
    images = np.asarray(images, np.float32)
    if images.ndim == 3:
        images = images[None]
    n = len(images)
    bs = max(1, min(batch_size, n))
    out = []
    for idx, real in _padded_batches(n, bs):
        p = _predict_images(graphdef, state.params, state.batch_stats, jnp.asarray(images[idx]))
        out.append(np.asarray(p)[:real])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _take(structures: Structure, idx) -> Structure:
    return Structure(*(np.asarray(x)[idx] for x in structures))


def predict_structures(eval_step, state, structures: Structure, batch_size: int = 64) -> np.ndarray:
    """Batched Structure (N, n_max, ...) -> probabilities (N, n_classes) numpy, via ``eval_step``."""
    n = int(np.shape(structures.positions)[0])
    bs = max(1, min(batch_size, n))
    out = []
    for idx, real in _padded_batches(n, bs):
        out.append(np.asarray(eval_step(state, _take(structures, idx)))[:real])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


# --------------------------------------------------------------------------------------------
# checkpoints (Orbax) -- training-time only; the shipped format is learn.checkpoint


def checkpoint_manager(directory, max_to_keep: int = 2):
    """An Orbax CheckpointManager in ``directory`` (created), synchronous saves."""
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False)
    return ocp.CheckpointManager(directory, options=options)


def save_checkpoint(manager, epoch: int, state: TrainState) -> None:
    """Save ``state`` as checkpoint number ``epoch`` (epochs completed)."""
    import orbax.checkpoint as ocp

    # a host copy: Orbax must not hold (or release) device buffers the donating train step reuses
    manager.save(int(epoch), args=ocp.args.StandardSave(jax.device_get(state)))
    manager.wait_until_finished()


def restore_latest(manager, template: TrainState) -> tuple[TrainState, int]:
    """``(state, epochs completed)`` from the newest checkpoint, or ``(template, 0)`` if none."""
    import orbax.checkpoint as ocp

    latest = manager.latest_step()
    if latest is None:
        return template, 0
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    restored = manager.restore(latest, args=ocp.args.StandardRestore(abstract))
    return TrainState(*restored), int(latest)


# --------------------------------------------------------------------------------------------
# the host loop


@dataclass
class FitResult:
    """graphdef + final TrainState; metrics: per split a classification report plus training info;
    history: one dict per epoch; probabilities: per evaluated split, (N_split, n_classes)."""

    graphdef: Any
    state: TrainState
    metrics: dict
    history: list
    probabilities: dict


def predict_rows(graphdef, state, data, rows, fingerprint_fn: FingerprintFn | None, batch_size: int = 64) -> np.ndarray:
    """Probabilities (len(rows), n_classes) numpy of ``data`` rows ``rows``, eval mode.

    data: batched Structure (N, ...) (or images with ``fingerprint_fn=None``), on device or host; each
    fixed-size chunk of rows (the last one padded) is gathered inside one jitted call, the outputs stay
    on the device until the single transfer at the end."""
    rows = np.asarray(rows, np.int64)
    if len(rows) == 0:
        return np.zeros((0, 0), np.float32)
    eval_step = make_eval_step(graphdef, fingerprint_fn, jit=False)
    run = jax.jit(lambda st, d, idx: eval_step(st, _rows(d, idx)))
    bs = max(1, min(int(batch_size), len(rows)))
    on_host = isinstance(jax.tree.leaves(data)[0], np.ndarray)
    outs = []
    for idx, real in _padded_batches(len(rows), bs):
        if on_host:  # gather the chunk on the host rather than send the whole data set
            chunk = jax.tree.map(lambda x: x[rows[idx]], data)
            outs.append((run(state, chunk, jnp.arange(bs, dtype=jnp.int32)), real))
        else:
            outs.append((run(state, data, jnp.asarray(rows[idx], jnp.int32)), real))
    return np.concatenate([np.asarray(p)[:real] for p, real in outs])


def fits_on_device(tree, budget_bytes: float) -> bool:
    """Whether the arrays of ``tree`` take at most ``budget_bytes`` (keep the data set device-resident)."""
    return sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree)) <= budget_bytes


def fit(
    model_cfg: ModelConfig,
    optim_cfg: OptimConfig,
    structures: Structure,
    labels,
    split,
    fingerprint_fn: FingerprintFn | None,
    defect_fn: DefectFn | None = None,
    *,
    seed: int = 0,
    run_dir=None,
    run: _tracking.Run | None = None,
    class_names: Sequence[str] | None = None,
    checkpoint: bool = True,
    resume: bool = True,
    eval_splits: Sequence[str] = ("val", "test"),
    eval_every_epoch: bool = True,
    progress: bool = True,
    log_every: int = 50,
    device_budget_bytes: float = 2e9,
) -> FitResult:
    """Train on ``split == "train"``, evaluate on ``eval_splits``.

    structures: batched numpy Structure (N, n_max, ...) (or images (N, H, W, C) with
    ``fingerprint_fn=None``); labels (N,) int; split (N,) strings "train"/"val"/"test".
    Key streams from ``seed``: model init, per-step training keys (``fold_in(step)`` inside the step),
    epoch permutations (:func:`epoch_order`, ``fold_in(epoch)``), so a resumed run repeats the same
    batches and two runs with one seed give the same parameters.
    The data set is put on the device once when it takes <= ``device_budget_bytes`` (else each batch is
    gathered on the host); the loop never waits for the device: metrics are summed on the device and
    fetched every ``log_every`` steps and at the end of each epoch.  Every step has shape
    (batch_size, ...), so the step compiles once.
    With ``run_dir`` and ``checkpoint``, an Orbax checkpoint is written to ``run_dir/checkpoints``
    after each epoch and (``resume``) training restarts after the latest one.
    """
    from tqdm.auto import tqdm

    labels = np.asarray(labels, np.int32)
    split = np.asarray(split).astype(str)
    n_classes = model_cfg.n_classes
    class_names = list(class_names) if class_names is not None else [str(i) for i in range(n_classes)]
    if len(class_names) != n_classes:
        raise ValueError(f"{len(class_names)} class names for {n_classes} classes")
    train_idx = np.flatnonzero(split == "train")
    if len(train_idx) == 0:
        raise ValueError("no training examples (split == 'train')")
    data = np.asarray(structures) if fingerprint_fn is None else Structure(*(np.asarray(x) for x in structures))
    on_device = fits_on_device((data, labels), device_budget_bytes)
    if on_device:
        data, labels_dev = jax.device_put((data, labels))

    optimizer = make_optimizer(optim_cfg)
    graphdef, state = init_state(model_cfg, optimizer, seed)
    step_fn = make_indexed_train_step(graphdef, optimizer, fingerprint_fn, defect_fn, donate=True)

    def predict(st, rows):
        return predict_rows(graphdef, st, data, rows, fingerprint_fn, optim_cfg.eval_batch_size)

    manager = None
    start_epoch = 0
    if run_dir is not None and checkpoint:
        manager = checkpoint_manager(Path(run_dir) / "checkpoints")
        if resume:
            state, start_epoch = restore_latest(manager, state)

    bs = int(optim_cfg.batch_size)
    steps_per_epoch = math.ceil(len(train_idx) / bs)
    log_every = max(1, int(log_every))
    root = jax.random.key(seed)
    k_train, k_order = jax.random.fold_in(root, 1), jax.random.fold_in(root, 2)
    first_step = int(state.step)
    history: list[dict] = []
    bar = tqdm(total=steps_per_epoch * max(optim_cfg.epochs - start_epoch, 0), disable=not progress,
               desc="train", unit="step")
    for epoch in range(start_epoch, optim_cfg.epochs):
        order = epoch_order(k_order, train_idx, epoch, bs)
        if not on_device:
            order_host = np.asarray(order)  # one transfer per epoch; batches gathered on the host
            order = jnp.arange(bs, dtype=jnp.int32)[None]
        sums = zero_sums()
        logged = {k: 0.0 for k in (*METRIC_NAMES, "steps")}
        for b in range(steps_per_epoch):
            if on_device:
                state, sums = step_fn(state, sums, data, labels_dev, order, b, k_train)
            else:
                idx = order_host[b]
                batch = jax.tree.map(lambda x: x[idx], data)
                state, sums = step_fn(state, sums, batch, labels[idx], order, 0, k_train)
            bar.update(1)
            done = b + 1
            if done % log_every == 0 or done == steps_per_epoch:
                got = {k: float(v) for k, v in jax.device_get(sums).items()}  # the only sync in the loop
                n = got["steps"] - logged["steps"]
                window = {f"train/{k}": (got[k] - logged[k]) / n for k in METRIC_NAMES}
                logged = got
                step = first_step + (epoch - start_epoch) * steps_per_epoch + int(got["steps"])
                _tracking.log(run, window | {"epoch": epoch}, step=step)
                bar.set_postfix(epoch=epoch + 1, loss=f"{window['train/loss']:.3f}")
        epoch_step = first_step + (epoch + 1 - start_epoch) * steps_per_epoch
        row = {"epoch": epoch + 1, "step": epoch_step} | {
            f"train/epoch_{k}": logged[k] / steps_per_epoch for k in ("loss", "accuracy")}
        if eval_every_epoch and "val" in eval_splits and np.any(split == "val"):
            vi = np.flatnonzero(split == "val")
            row["val/accuracy"] = _ev.accuracy(labels[vi], predict(state, vi))
        history.append(row)
        _tracking.log(run, {k: v for k, v in row.items() if k not in ("step",)}, step=epoch_step)
        if manager is not None:
            save_checkpoint(manager, epoch + 1, state)
    bar.close()
    if manager is not None:
        manager.close()

    metrics: dict = {
        "epochs": int(optim_cfg.epochs), "steps": int(state.step), "steps_per_epoch": steps_per_epoch,
        "resumed_from_epoch": start_epoch, "n_train": int(len(train_idx)), "data_on_device": bool(on_device),
    }
    probs: dict = {}
    for name in eval_splits:
        si = np.flatnonzero(split == name)
        if len(si) == 0:
            continue
        p = predict(state, si)
        probs[name] = p
        metrics[name] = _ev.classification_report(labels[si], p, class_names)
        _tracking.set_summary(run, {f"{name}/accuracy": metrics[name]["accuracy"]})
    return FitResult(graphdef, state, metrics, history, probs)


__all__ = [
    "OptimConfig", "TrainState", "FitResult",
    "make_optimizer", "split_model", "merge_model", "init_state", "apply_model",
    "make_train_step", "make_indexed_train_step", "epoch_order", "zero_sums", "predict_rows", "make_eval_step", "predict_from_fingerprints", "predict_structures",
    "checkpoint_manager", "save_checkpoint", "restore_latest",
    "fit",
]
