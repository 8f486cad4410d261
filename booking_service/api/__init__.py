"""HTTP layer: one blueprint per resource, thin views over the services."""

from flask_smorest import Api

# The OpenAPI document and the registry of every blueprint; bound to the app by create_app.
openapi = Api()
