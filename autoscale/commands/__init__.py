"""One module per `autoscale` subcommand, each with `register(app)`."""
