"""The domain (``tminus.domain``): pure rules, no I/O.

What a launch is (request, plan, playbook), and for each system the pure *diff* of the plan
against what an adapter observed (``issues``, ``calendar``, ``pages``, ``sales``). Imports no
other tminus layer: ``make lint`` checks it.
"""
