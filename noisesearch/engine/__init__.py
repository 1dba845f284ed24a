"""The driver loop's parts (``noisesearch.driver.run_search`` is the loop itself).

- ``executors``: the one ``Executor`` interface (``plan``, ``run``), the run's ``RunContext``, ``StepExecutor``
  (sample, decode, preview, score) and ``WholeExecutor`` (a whole pipeline per candidate);
- ``replay``: ``ReplayCache``, the replay cache as a decorator around a step executor;
- ``table``: ``CandidateTable`` / ``Candidates`` (the records as columns) and ``Best`` (each search's best);
- ``results``: ``SearchResult``, ``RunStats``, ``SearchRun``;
- ``checks``: refusals before any work: ``check_run`` (the one compatibility check of model, algorithm, sampler,
  verifier and final steps, from their declared infos), ``check_final_steps``, ``final_schedule``.
"""
