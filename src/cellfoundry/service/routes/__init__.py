"""The API's routers, one module per area; ``ROUTERS`` in the order the app includes them."""

from cellfoundry.service.routes import catalogue, datasets, health, predict, results, runs

ROUTERS = [
    health.router,
    catalogue.router,
    datasets.router,
    runs.router,
    results.router,
    predict.router,
]

__all__ = ["ROUTERS"]
