"""noisesearch: inference-time scaling for diffusion and flow models by searching for better noises.

Ma et al. 2025, "Inference-Time Scaling for Diffusion Models beyond Scaling Denoising Steps"
(arXiv 2501.09732). The front door: ``noisesearch.from_pipeline(pipe)`` turns any diffusers pipeline object into a
model and ``noisesearch.search(model, prompts, verifier=...)`` searches its noises (``noisesearch.api``).
The parts, by contract (see docs/ARCHITECTURE.md):

- sigma convention and samplers: ``noisesearch.samplers`` (``SAMPLERS``, ``schedule``)
- models: ``noisesearch.models`` (``MODELS``, the ``Model`` contract)
- verifiers: ``noisesearch.verifiers`` (``VERIFIERS``, the ``Verifier`` contract)
- search algorithms: ``noisesearch.algorithms`` (``ALGORITHMS``, ``Problems``, ``Jobs``, ``Outcomes``)
- the one accounting point: ``noisesearch.accounting.Accountant``
- the one driver loop: ``noisesearch.driver.run_search``
- jobs: ``noisesearch.generate.generate``, ``noisesearch.sweep.run.run_sweep``, the studies behind ``demo`` and
  ``compare`` (``noisesearch.studies``) and ``noisesearch.paper``
"""

from noisesearch._version import __version__ as __version__  # re-exported: the version lives apart

__all__ = ["from_pipeline", "search"]


def __getattr__(name: str):
    """``from_pipeline`` and ``search`` from ``noisesearch.api``, imported when first used (the CLI starts without torch)."""
    if name in __all__:
        from noisesearch import api

        return getattr(api, name)
    raise AttributeError(f"module 'noisesearch' has no attribute {name!r}")
