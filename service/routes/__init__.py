"""One blueprint per resource of the API (SPEC 5)."""

from service.routes.assets import blueprint as assets
from service.routes.console import blueprint as console
from service.routes.content import blueprint as content
from service.routes.experiments import blueprint as experiments
from service.routes.health import blueprint as health
from service.routes.learning import blueprint as learning
from service.routes.recommendations import blueprint as recommendations
from service.routes.scores import blueprint as scores

BLUEPRINTS = (health, recommendations, scores, learning, content, experiments, assets, console)

__all__ = ["BLUEPRINTS"]
