"""
``manage.py runserver`` and ``runworker`` on chanserv.  Main thread (the
command's).
"""
