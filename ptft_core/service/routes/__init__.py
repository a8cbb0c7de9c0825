"""The service's routes, one router per concern; each handler is one call of the lab (`deps.Lab`)."""

from ptft_core.service.routes import datasets, lab, queries, runs, studies, sweeps

ROUTERS = (lab.router, runs.router, queries.router, studies.router, sweeps.router, datasets.router)
