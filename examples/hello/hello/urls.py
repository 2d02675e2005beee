"""No views: ``http.request`` is routed to a consumer (see routing.py).

Remove that route and requests fall through to these URLs, as in any Django
project.
"""

urlpatterns: list = []
