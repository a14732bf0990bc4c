"""Scenario files shipped with RasPy as examples.

Core looks a scenario's file up in the owner's scenarios directory first, then
here. Each file defines ``run(ctx)``; see docs/core.md.
"""
