"""noisesearch: inference-time scaling for diffusion and flow models by searching for better noises.

Ma et al. 2025, "Inference-Time Scaling for Diffusion Models beyond Scaling Denoising Steps"
(arXiv 2501.09732). The public API, by contract (see docs/ARCHITECTURE.md):

- sigma convention and samplers: ``noisesearch.samplers`` (``SAMPLERS``, ``schedule``)
- models: ``noisesearch.models`` (``MODELS``, the ``Model`` contract)
- verifiers: ``noisesearch.verifiers`` (``VERIFIERS``, the ``Verifier`` contract)
- search algorithms: ``noisesearch.algorithms`` (``ALGORITHMS``, ``Problem``, ``Job``, ``Outcome``)
- the one accounting point: ``noisesearch.accounting.Accountant``
- the one driver loop: ``noisesearch.driver.run_search``
- jobs: ``noisesearch.generate.generate``, ``noisesearch.study.run_study``, ``noisesearch.demo``
"""

__version__ = "0.1.0"
