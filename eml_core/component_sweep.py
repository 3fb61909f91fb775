r"""The one-pass threshold sweep: every threshold's largest connected component from one union-find pass.

For a map M (H x W) and thresholds t_0 < t_1 < ... < t_{m-1}, the masks
{M > t_j} are nested: lowering t only adds pixels. So instead of labelling m
masks (m OpenCV passes), visit the pixels once, from high values to low, and
merge what enters with its already-visited neighbours in a union-find forest
(the max-tree / component-tree construction, Najman & Couprie, IEEE TIP 2006;
Carlinet & Geraud, IEEE TIP 2014). Every root carries its component's area,
bounding box and tie-break keys, so the largest component is known after every
merge; it is read off each time the visit crosses a threshold.

**Levels.** Pixels need not be sorted: only the threshold interval a value
falls in matters. The *level* of a value v is

.. math::  \ell(v) = \#\{ j : v > t_j \}

(strict ``>``: a pixel equal to t_j is outside mask j; NaN exceeds nothing), and
pixel v is in mask j iff ``ell(v) > j``. Levels come from a 4096-bin lookup
table over [t_0, t_{m-1}] refined by exact comparisons (so the table only
speeds things up; every level is checked against the thresholds themselves).

**Runs.** Each row is cut into *runs*, maximal horizontal segments of equal
level (one run per pixel at worst; about 3 pixels per run for 100 thresholds on
smooth CUB-sized maps; whole rows for one threshold). A run enters the forest
as a whole: it is connected, and all its pixels join the masks together. Runs
are bucketed by level (counting sort) and visited from level m down to 1; after
bucket j + 1 the forest holds exactly mask j and mask j's box is read off.
Pixels of equal value have equal levels, so a plateau always enters as a whole;
the state at a read-off depends only on the pixel *set*, not on the visiting
order inside a bucket.

Entering a run: look at the labels of its neighbours already in the forest
(left and right ends; the row above and below, one pixel wider on each side at
8-connectivity), merge their components (union by size, path halving), add the
run to the result (or start a new component), label the run's pixels.

**Largest component and ties.** Merges only grow areas: a merged component is
strictly larger than each of its parts, so after each step the largest
component is the previous one or the component just grown. Among equal areas
the smaller *key* wins, where the key reproduces OpenCV's labelling order as
:func:`eml_core.sweep.sweep_thresholds` (``algorithm="opencv"``) sees it:

* 4-connectivity (OpenCV's pixel-based scan): labels follow the component's
  first pixel in raster order; key = min over the component of its raster index.
* 8-connectivity (OpenCV's block-based Spaghetti, 2 x 2 blocks): labels follow
  the component's first *block* in block-raster order (all foreground pixels of
  a 2 x 2 block are 8-connected, so a block belongs to one component). The
  OpenCV loop labels the mask cropped to its bounding rows and columns, so the
  blocks are anchored at the mask's top-left corner (top, left), whose
  parities change with t. One key and one best component are kept per parity
  pair (top mod 2, left mod 2): key = min over the component of
  ``((r + 2 - top mod 2) // 2, (c + 2 - left mod 2) // 2)`` (lexicographic),
  and the tracker of the current mask's parities is read off.

**Cost.** O(N) to compute levels and cut runs (plus O(log) per value when the
lookup table cannot bracket it), O(R alpha(R)) for the R runs' merges, with
R <= N whatever the number of thresholds m, and O(1) per threshold read-off.
Memory: about 16 bytes per pixel plus 60 (4-connectivity) to 84 (8) per run.

This module imports numba; :mod:`eml_core.sweep` imports it lazily, on the
first one-pass sweep. Compiled code is cached next to the module
(``cache=True``), so only the first run on a machine pays the compilation
(a few seconds per map dtype). The kernels release the GIL (``nogil``), so
threads (e.g. Dask workers) can sweep maps in parallel.
"""

from __future__ import annotations

import numba
import numpy as np

LOOKUP_BINS = 4096
_FIELD = 21                      # bits per field of a packed run: row | first column | last column
_FIELD_MASK = (1 << _FIELD) - 1
MAX_SIDE = 1 << _FIELD           # maps up to 2,097,152 pixels per side


@numba.njit(cache=True, nogil=True, inline="always")
def _root(parent, i):
    """Root of component i, halving the path on the way (every visited node skips to its grandparent)."""
    while parent[i] != i:
        grandparent = parent[parent[i]]
        parent[i] = grandparent
        i = grandparent
    return i


@numba.njit(cache=True, nogil=True)
def _lookup_table(thresholds):
    """``guess[b]`` = number of thresholds below bin b's lower edge, for 4096 bins over [t_0, t_{m-1}].

    Returns ``(guess, scale, crowded)``: values map to bin ``(v - t_0) * scale``;
    ``crowded`` when some bin holds more than 4 thresholds (then levels are
    found by binary search in the bin's bracket rather than by walking).
    """
    m = thresholds.size
    low, high = thresholds[0], thresholds[m - 1]
    span = high - low
    guess = np.zeros(LOOKUP_BINS + 2, np.int64)
    if not (np.isfinite(span) and span > 0):
        return guess, 0.0, True
    scale = LOOKUP_BINS / span
    if not np.isfinite(scale):       # a span below 4096 / (largest float), e.g. subnormal: no table
        return guess, 0.0, True
    j = 0
    crowded = False
    for b in range(LOOKUP_BINS + 2):
        edge = low + b / scale
        while j < m and thresholds[j] < edge:
            j += 1
        guess[b] = j
        if b > 0 and guess[b] - guess[b - 1] > 4:
            crowded = True
    return guess, scale, crowded


@numba.njit(cache=True, nogil=True)
def _cut_runs(values, thresholds, runs, run_levels, count):
    """Cut every row into runs of equal level > 0; returns how many (packed into ``runs``, levels counted)."""
    height, width = values.shape
    m = thresholds.size
    lowest, highest = thresholds[0], thresholds[m - 1]
    guess, scale, crowded = _lookup_table(thresholds)
    total = 0
    for r in range(height):
        previous = 0
        first = 0
        above, at_most = -np.inf, lowest     # the previous pixel's level is the one of the values in (above, at_most]
        for c in range(width):
            v = values[r, c]
            if v > above and v <= at_most:   # most pixels: the level of the pixel before (NaN never takes this way)
                continue
            # The level, written out here: numba does not inline a call taking arrays well (ten times slower).
            if not v > lowest:          # also NaN
                level = 0
            elif v > highest:
                level = m
            else:
                # Start from the table's guess (bins are approximate), or binary-search the bracket when
                # bins are crowded; then walk to the exact level, checked against the thresholds themselves.
                low, b = 1, 0
                if scale > 0:
                    b = min(int((v - lowest) * scale), LOOKUP_BINS)
                    low = max(1, guess[b])
                if crowded:
                    high = m - 1
                    if scale > 0:
                        low = max(1, low - 1)
                        high = min(m - 1, guess[b + 1] + 1)
                    while low < high:   # the first j in [low, high] with not v > t_j
                        middle = (low + high) >> 1
                        if v > thresholds[middle]:
                            low = middle + 1
                        else:
                            high = middle
                while low < m and v > thresholds[low]:
                    low += 1
                while low > 1 and not v > thresholds[low - 1]:
                    low -= 1
                level = low
            above = thresholds[level - 1] if level > 0 else -np.inf
            at_most = thresholds[level] if level < m else np.inf
            if level != previous:
                if previous > 0:
                    runs[total] = (r << (2 * _FIELD)) | (first << _FIELD) | (c - 1)
                    run_levels[total] = previous
                    count[previous] += 1
                    total += 1
                previous = level
                first = c
        if previous > 0:
            runs[total] = (r << (2 * _FIELD)) | (first << _FIELD) | (width - 1)
            run_levels[total] = previous
            count[previous] += 1
            total += 1
    return total


@numba.njit(cache=True, nogil=True)
def largest_component_boxes(values, thresholds, eight):
    """Box of the largest component of ``values > t`` for every t of ``thresholds``, in one pass.

    ``values``: (H, W) float array, H and W below :data:`MAX_SIDE`.
    ``thresholds``: float64, strictly increasing, no NaN, at least one
    (comparisons are done in float64, so a float32 value is compared exactly).
    ``eight``: 8-connectivity if True, else 4.

    Returns an int64 array (m, 4) of pixel-edge boxes ``(x0, y0, x1, y1)`` in the
    order of ``thresholds``; a row of -1 where the mask is empty.
    """
    height, width = values.shape
    m = thresholds.size
    boxes = np.full((m, 4), -1, np.int64)
    if height == 0 or width == 0:
        return boxes

    # Runs in raster order, then bucketed by level, highest level first.
    raster_runs = np.empty(height * width, np.int64)
    raster_levels = np.empty(height * width, np.int32)
    count = np.zeros(m + 1, np.int64)
    found = _cut_runs(values, thresholds, raster_runs, raster_levels, count)
    start = np.zeros(m + 1, np.int64)
    total = 0
    for level in range(m, 0, -1):
        start[level] = total
        total += count[level]
    runs = np.empty(total, np.int64)
    cursor = start.copy()
    for i in range(found):
        level = raster_levels[i]
        runs[cursor[level]] = raster_runs[i]
        cursor[level] += 1

    keys = 4 if eight else 1
    reach = 1 if eight else 0          # how far the rows above and below are read past the run's ends
    padded_width = width + 2
    # Component of every pixel in the forest (-1: not yet in), with a one-pixel border that never enters.
    label = np.full((height + 2) * padded_width, -1, np.int32)
    parent = np.empty(total, np.int32)   # at most one component per run
    area = np.empty(total, np.int64)
    box = np.empty((total, 4), np.int64)  # column min, row min, column max, row max (inclusive)
    key = np.empty((total, keys), np.int64)
    run_key = np.empty(keys, np.int64)
    components = 0
    block_width = width // 2 + 2
    best = np.full(keys, -1, np.int64)
    best_area = np.zeros(keys, np.int64)
    best_key = np.zeros(keys, np.int64)
    top, left = height, width           # the mask's top-left bounding corner (anchors OpenCV's 2x2 blocks)

    k = 0
    for level in range(m, 0, -1):
        end = start[level] + count[level]
        while k < end:
            code = runs[k]
            k += 1
            r = code >> (2 * _FIELD)
            c0 = (code >> _FIELD) & _FIELD_MASK
            c1 = code & _FIELD_MASK
            p0 = (r + 1) * padded_width + c0 + 1   # padded index of the run's first pixel
            p1 = p0 + (c1 - c0)
            if eight:
                for q in range(4):
                    run_key[q] = ((r + 2 - (q >> 1)) >> 1) * block_width + ((c0 + 2 - (q & 1)) >> 1)
            else:
                run_key[0] = p0                    # the padded index is in raster order too
            top = min(top, r)
            left = min(left, c0)

            own = -1
            seen = -1
            for side in range(4):               # left end, right end, row above, row below
                if side == 0:
                    first, last = p0 - 1, p0 - 1
                elif side == 1:
                    first, last = p1 + 1, p1 + 1
                elif side == 2:
                    first, last = p0 - padded_width - reach, p1 - padded_width + reach
                else:
                    first, last = p0 + padded_width - reach, p1 + padded_width + reach
                for q in range(first, last + 1):
                    neighbour = label[q]
                    if neighbour < 0 or neighbour == seen:
                        continue
                    seen = neighbour
                    root = _root(parent, neighbour)
                    if root == own:
                        continue
                    if own < 0:
                        own = root
                        continue
                    a, b = own, root
                    if area[b] > area[a]:
                        a, b = b, a
                    parent[b] = a
                    area[a] += area[b]
                    box[a, 0] = min(box[a, 0], box[b, 0])
                    box[a, 1] = min(box[a, 1], box[b, 1])
                    box[a, 2] = max(box[a, 2], box[b, 2])
                    box[a, 3] = max(box[a, 3], box[b, 3])
                    for t in range(keys):
                        key[a, t] = min(key[a, t], key[b, t])
                    own = a
            if own < 0:
                own = components
                components += 1
                parent[own] = own
                area[own] = c1 - c0 + 1
                box[own, 0], box[own, 1], box[own, 2], box[own, 3] = c0, r, c1, r
                for t in range(keys):
                    key[own, t] = run_key[t]
            else:
                area[own] += c1 - c0 + 1
                box[own, 0] = min(box[own, 0], c0)
                box[own, 1] = min(box[own, 1], r)
                box[own, 2] = max(box[own, 2], c1)
                box[own, 3] = max(box[own, 3], r)
                for t in range(keys):
                    key[own, t] = min(key[own, t], run_key[t])
            for q in range(p0, p1 + 1):
                label[q] = own
            for t in range(keys):
                if area[own] > best_area[t] or (area[own] == best_area[t] and key[own, t] < best_key[t]):
                    best[t] = own
                    best_area[t] = area[own]
                    best_key[t] = key[own, t]
        winner = best[((top & 1) << 1) | (left & 1)] if eight else best[0]
        if winner >= 0:
            j = level - 1
            boxes[j, 0] = box[winner, 0]
            boxes[j, 1] = box[winner, 1]
            boxes[j, 2] = box[winner, 2] + 1
            boxes[j, 3] = box[winner, 3] + 1
    return boxes
