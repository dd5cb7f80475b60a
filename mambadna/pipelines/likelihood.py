"""Log-likelihoods of allele windows under a causal DNA language model, with a shared prefix.

A site is one variant position on one strand: a prefix of reference bases (the same for every
allele) and one suffix per allele (the allele followed by reference bases), all suffixes of one
length. The log-likelihood of an allele's window ``prefix + suffix`` (f + S = W bases) is the sum
of the next-base log-probabilities of its bases 1..W-1 (the first base has no prediction)::

    ll(window) = sum_{t=1}^{W-1} log p(x_t | x_<t)      (targets that are N are left out)

For a causal model the terms t < f are the same for every allele: only the suffix terms differ.
``shared_prefix=True`` runs each prefix once, carries the recurrent state (conv and SSM states
of every block, mambadna.model.state) and runs every allele's suffix from it; the naive way
(``shared_prefix=False``) runs every allele's whole window from a zero state. Both give the same
numbers (streaming is exact to fp32 rounding); the shared prefix saves f bases per allele.

``SiteBatches`` gathers sites into forward passes of equal prefix and suffix lengths and runs
each distinct prefix (and each distinct allele suffix of a site) once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np
import torch

from mambadna.alphabet import N
from mambadna.model import MambaDNA


@dataclass
class Site:
    """One variant position on one strand. prefix: (f,) uint8 tokens, f >= 1; suffixes: one
    (S,) uint8 token array per allele, every one of the same length S >= 1."""

    prefix: np.ndarray
    suffixes: list[np.ndarray]


@dataclass
class SiteLikelihoods:
    """prefix: (n_sites,) float64, the prefix terms t = 1..f-1 (0 in the naive way, whose
    suffixes are whole windows); suffixes: per site, (n_alleles,) float64 suffix terms.
    A window's log-likelihood is ``prefix[i] + suffixes[i][k]``."""

    prefix: np.ndarray
    suffixes: list[np.ndarray]


def _target_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed log-probabilities (rows,) float64 of targets (rows, l) under logits (rows, l, V);
    N targets count 0 (as in training, N is not a base to predict)."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    picked = log_probs.gather(-1, targets[..., None])[..., 0]  # (rows, l)
    return (picked.double() * (targets != N)).sum(-1)


def _tokens(arrays: list[np.ndarray], device: torch.device) -> torch.Tensor:
    # uint8 over the bus (8x less than int64), widened on the device
    return torch.from_numpy(np.stack(arrays)).to(device).long()


class LikelihoodRunner:
    """Runs a unidirectional ``model`` over sites (see the module docstring).

    bf16: autocast the network to bfloat16 (log-probabilities and sums stay fp32/fp64).
    """

    def __init__(self, model: MambaDNA, *, shared_prefix: bool = True,
                 bf16: bool = False) -> None:
        self.model = model
        self.shared_prefix = shared_prefix
        self.bf16 = bf16

    def _autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.model.device.type, dtype=torch.bfloat16)

    def __call__(self, sites: list[Site]) -> SiteLikelihoods:
        """Log-likelihood terms of every allele window of ``sites``: every site has the same
        prefix length and suffix length (callers group them)."""
        if not sites:
            return SiteLikelihoods(np.zeros(0), [])
        rows = np.repeat(np.arange(len(sites)), [len(s.suffixes) for s in sites])
        with torch.inference_mode(), self._autocast():
            if self.shared_prefix:
                prefix, flat = self._shared(sites, rows)
            else:
                prefix, flat = self._naive(sites)
        bounds = np.cumsum([0] + [len(s.suffixes) for s in sites])
        return SiteLikelihoods(prefix, [flat[bounds[i]:bounds[i + 1]]
                                        for i in range(len(sites))])

    def _shared(self, sites: list[Site], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        model, device = self.model, self.model.device
        prefix = _tokens([s.prefix for s in sites], device)  # (n_sites, f)
        hidden, state = model.hidden_states(prefix, return_state=True)
        logits = model.lm_logits(hidden)  # (n_sites, f, V)
        prefix_ll = _target_log_probs(logits[:, :-1], prefix[:, 1:])
        suffix = _tokens([x for s in sites for x in s.suffixes], device)  # (n_alleles, S)
        index = torch.from_numpy(rows).to(device)
        # the first suffix base is predicted by the prefix's last position
        first = _target_log_probs(logits[index, -1:], suffix[:, :1])
        if suffix.shape[1] > 1:
            hidden = model.hidden_states(suffix[:, :-1], state=state.select(index))
            rest = _target_log_probs(model.lm_logits(hidden), suffix[:, 1:])
        else:
            rest = torch.zeros_like(first)
        return prefix_ll.cpu().numpy(), (first + rest).cpu().numpy()

    def _naive(self, sites: list[Site]) -> tuple[np.ndarray, np.ndarray]:
        model, device = self.model, self.model.device
        windows = _tokens([np.concatenate([s.prefix, x]) for s in sites for x in s.suffixes],
                          device)  # (n_alleles, W)
        logits = model.lm_logits(model.hidden_states(windows[:, :-1]))
        return np.zeros(len(sites)), _target_log_probs(logits, windows[:, 1:]).cpu().numpy()


Sink = Callable[[int, float, float, float], None]
"""(row, score, ref_ll, alt_ll) of one REF/ALT pair on one strand."""


class _Group:
    """Sites of one (prefix, suffix) length waiting for a forward pass."""

    def __init__(self) -> None:
        self.sites: list[Site] = []
        self.site_index: dict[Hashable, int] = {}
        self.suffix_index: list[dict[Hashable, int]] = []
        self.pairs: list[tuple[int, int, int, int]] = []  # row, site, REF suffix, ALT suffix
        self.n_suffixes = 0

    def site(self, key: Hashable, prefix: np.ndarray) -> int:
        if key not in self.site_index:
            self.site_index[key] = len(self.sites)
            self.sites.append(Site(prefix, []))
            self.suffix_index.append({})
        return self.site_index[key]

    def suffix(self, site: int, key: Hashable, tokens: np.ndarray) -> int:
        index = self.suffix_index[site]
        if key not in index:
            index[key] = len(self.sites[site].suffixes)
            self.sites[site].suffixes.append(tokens.astype(np.uint8, copy=False))
            self.n_suffixes += 1
        return index[key]


class SiteBatches:
    """Collects REF/ALT pairs of sites into forward passes of about ``batch_size`` allele
    windows, grouped by prefix and suffix length (a batch needs equal lengths: padding a
    prefix would change the state it hands on). A site key seen twice (several records at one
    position) runs its prefix once, an allele key seen twice at a site its suffix once.
    Results go to ``sink`` as soon as their batch has run; call ``flush`` at the end."""

    def __init__(self, runner: LikelihoodRunner, batch_size: int, sink: Sink) -> None:
        self.runner = runner
        self.batch_size = batch_size
        self.sink = sink
        self.groups: dict[tuple[int, int], _Group] = {}
        self.windows_run = 0

    def add(self, key: Hashable, prefix: np.ndarray,
            alleles: list[tuple[Hashable, np.ndarray]],
            pairs: list[tuple[int, int, int]]) -> None:
        """alleles: (key, suffix tokens) of the site's alleles; pairs: (row, REF allele,
        ALT allele) as indices into ``alleles``."""
        shape = (len(prefix), len(alleles[0][1]))
        group = self.groups.setdefault(shape, _Group())
        site = group.site(key, prefix)
        index = [group.suffix(site, k, tokens) for k, tokens in alleles]
        group.pairs += [(row, site, index[ref], index[alt]) for row, ref, alt in pairs]
        if group.n_suffixes >= self.batch_size:
            self._run(shape)

    def flush(self) -> None:
        for shape in list(self.groups):
            self._run(shape)

    def _run(self, shape: tuple[int, int]) -> None:
        group = self.groups.pop(shape)
        result = self.runner(group.sites)
        self.windows_run += group.n_suffixes
        for row, site, ref, alt in group.pairs:
            prefix = float(result.prefix[site])
            ref_ll, alt_ll = result.suffixes[site][ref], result.suffixes[site][alt]
            # the prefix terms cancel exactly in the score
            self.sink(row, float(alt_ll - ref_ll), prefix + ref_ll, prefix + alt_ll)
