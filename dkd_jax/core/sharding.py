"""Where every array lives: the mesh and the one logical-axis rules table.

Model code names array dimensions with logical axes ('vocab', 'embed', 'heads',
...); this module alone maps them onto the physical mesh ('data', 'fsdp',
'tensor'). A dimension that does not divide its mesh axes is an error, never a
silent replication.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# The rules table: logical axis -> mesh axes (None = replicated).
LOGICAL_RULES: Mapping[str, tuple[str, ...] | str | None] = {
  "batch": BATCH_AXES,
  "vocab": "tensor",
  "heads": "tensor",
  "kv_heads": "tensor",
  "mlp": "tensor",
  "embed": "fsdp",
  "layers": None,
  "head_dim": None,
  "length": None,
  "norm": None,
  "cache_length": None,
}


def make_mesh(shape: Sequence[int], devices=None) -> Mesh:
  """Builds the ('data', 'fsdp', 'tensor') mesh; the only place a mesh is made."""
  shape = tuple(int(s) for s in shape)
  if len(shape) != 3 or any(s < 1 for s in shape):
    raise ValueError(f"mesh shape must be 3 positive ints (data, fsdp, tensor), got {shape}")
  devices = jax.devices() if devices is None else devices
  need = int(np.prod(shape))
  if need > len(devices):
    raise ValueError(f"mesh {shape} needs {need} devices, only {len(devices)} available")
  if need == len(jax.devices()) and devices is None:
    return jax.make_mesh(shape, MESH_AXES)
  return Mesh(np.asarray(devices[:need]).reshape(shape), MESH_AXES)


def resolve_mesh(shape: Sequence[int]) -> Mesh:
  """The run's mesh from config.mesh (data, fsdp, tensor); one -1 takes the devices left."""
  shape = [int(s) for s in shape]
  if shape.count(-1) > 1:
    raise ValueError(f"config.mesh={tuple(shape)}: at most one -1")
  if -1 in shape:
    rest = int(np.prod([s for s in shape if s != -1]))
    shape[shape.index(-1)] = max(jax.device_count() // rest, 1)
  return make_mesh(shape)


def logical_to_spec(logical: Sequence[str | None]) -> P:
  """Maps a tuple of logical axis names to a PartitionSpec via LOGICAL_RULES."""
  out = []
  for name in logical:
    if name is None:
      out.append(None)
    elif name not in LOGICAL_RULES:
      raise KeyError(f"logical axis {name!r} has no rule; known: {sorted(LOGICAL_RULES)}")
    else:
      out.append(LOGICAL_RULES[name])
  return P(*out)


def _axis_size(mesh: Mesh, axes) -> int:
  if axes is None:
    return 1
  axes = (axes,) if isinstance(axes, str) else axes
  return int(np.prod([mesh.shape[a] for a in axes]))


def named_sharding(
  mesh: Mesh, logical: Sequence[str | None], shape=None, name: str = "array"
) -> NamedSharding:
  """NamedSharding for logical axes; checks divisibility when `shape` is given."""
  spec = logical_to_spec(logical)
  if shape is not None:
    if len(shape) != len(spec):
      raise ValueError(
        f"{name}: shape {tuple(shape)} has {len(shape)} dims but logical axes "
        f"{tuple(logical)} name {len(spec)}"
      )
    for dim, axes, lname in zip(shape, spec, logical):
      size = _axis_size(mesh, axes)
      if dim % size:
        raise ValueError(
          f"{name}: dimension {lname!r} of size {dim} does not divide mesh axes {axes} "
          f"(size {size}) of mesh {dict(mesh.shape)}; change the mesh shape"
        )
  return NamedSharding(mesh, spec)


def tree_shardings(mesh: Mesh, logical_tree, shape_tree) -> Any:
  """Maps a pytree of logical-axis tuples + matching shapes to NamedShardings."""
  is_axes = lambda x: isinstance(x, tuple) and all(a is None or isinstance(a, str) for a in x)
  paths = jax.tree_util.tree_flatten_with_path(logical_tree, is_leaf=is_axes)[0]
  is_shape = lambda x: isinstance(x, tuple) and all(isinstance(i, int) for i in x)
  shapes = jax.tree_util.tree_leaves(shape_tree, is_leaf=is_shape)
  if len(paths) != len(shapes):
    raise ValueError(f"logical tree has {len(paths)} leaves, shape tree {len(shapes)}")
  out = [
    named_sharding(mesh, axes, getattr(s, "shape", s), jax.tree_util.keystr(path))
    for (path, axes), s in zip(paths, shapes)
  ]
  treedef = jax.tree_util.tree_structure(logical_tree, is_leaf=is_axes)
  return jax.tree_util.tree_unflatten(treedef, out)


def without_axis(s: NamedSharding, mesh_axis: str, drop_leading: bool = False) -> NamedSharding:
  """`s` with `mesh_axis` removed from its spec (that dimension then replicated over it);
  drop_leading also removes the spec's first entry (a slice of a stacked array)."""
  spec = list(s.spec)[1 if drop_leading else 0 :]

  def keep(entry) -> str | tuple[str, ...] | None:
    if entry == mesh_axis:
      return None
    if isinstance(entry, tuple):
      rest = tuple(a for a in entry if a != mesh_axis)
      return rest if len(rest) > 1 else (rest[0] if rest else None)
    return entry

  return NamedSharding(s.mesh, P(*[keep(e) for e in spec]))


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Leading dim over ('data','fsdp'), the rest replicated."""
  return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (ndim - 1)))


def mesh_context(mesh: Mesh | None) -> contextlib.AbstractContextManager:
  """Inside a traced function: makes `mesh` the context `constrain_batch` reads (a no-op
  context for None)."""
  if mesh is None:
    return contextlib.nullcontext()
  return jax.sharding.use_abstract_mesh(mesh.abstract_mesh)


def constrain_batch(x: jax.Array) -> jax.Array:
  """x with its leading (batch) dimension pinned over ('data', 'fsdp') when a mesh is in
  context (`mesh_context`), else x. Without it XLA meets the 'fsdp'-sharded weights'
  embed dimension and keeps the weights sharded instead of gathering them: the batch is
  replicated over 'fsdp' and every chip holds the whole batch's activations (found by the
  AOT compile check, BUILD_NOTES issue 25: 4.6x the train step's temporaries on 4 chips)."""
  m = jax.sharding.get_abstract_mesh()
  if m.empty or not set(BATCH_AXES) <= set(m.axis_names):
    return x
  if x.shape[0] % int(np.prod([m.shape[a] for a in BATCH_AXES])):
    return x
  return jax.lax.with_sharding_constraint(x, P(BATCH_AXES, *([None] * (x.ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def put_global(tree, shardings) -> Any:
  """Host arrays (the same global value on every process) -> global jax.Arrays; each
  process copies only the slices its own devices hold (no cross-host traffic, no
  equality check). With one process this is `jax.device_put`."""
  if jax.process_count() == 1:
    return jax.device_put(tree, shardings)

  def one(x, s) -> jax.Array:
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])

  return jax.tree.map(one, tree, shardings)


def to_host(tree) -> Any:
  """Numpy copies of a pytree of arrays. An array sharded over other processes' devices
  is gathered first, which is a collective: every process must make the same call."""

  def one(x) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
      from jax.experimental import multihost_utils

      x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(x)

  return jax.tree.map(one, tree)
