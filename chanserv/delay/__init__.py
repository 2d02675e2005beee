"""
The delay server (Channels 1.x's ``channels.delay``): ``"chanserv.delay"`` in
``INSTALLED_APPS`` stores every message sent to ``asgi.delay`` in the
database and sends its ``content`` on to its ``channel`` once its ``delay``
(milliseconds) is over.  ``twistd chanserv`` runs it in ``--mode=all`` and
``--mode=worker``; ``manage.py rundelay`` runs it alone.  Importing this
package runs nothing (any thread).
"""
