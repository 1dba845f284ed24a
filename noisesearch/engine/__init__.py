"""The driver loop's parts (``noisesearch.driver.run_search`` is the loop itself).

- ``executors``: the one ``Executor`` interface (``plan``, ``run``), the run's ``RunContext``, ``StepExecutor``
  (sample, decode, preview, score) and ``WholeExecutor`` (a whole pipeline per candidate);
- ``replay``: ``ReplayCache``, the replay cache as a decorator around a step executor;
- ``table``: ``CandidateTable`` / ``Candidates`` (the records as columns) and ``Best`` (each search's best);
- ``results``: ``SearchResult``, ``RunStats``, ``SearchRun``;
- ``checks``: refusals before any work (``check_final_steps``, ``final_schedule``, ``check_whole_trajectory``).
"""
