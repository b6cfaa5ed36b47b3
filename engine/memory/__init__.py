"""Memory: a recipe's plan of GPU memory per rank, the rule that it must fit, the exact
sizes of real architectures it counts, and measured peaks."""
