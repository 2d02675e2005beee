"""A Django app with the models the data binding tests bind to."""
