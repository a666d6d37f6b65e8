"""The counting game and the programs that play it.

``tasks`` (the games: trials, tokens, count sets), ``programs`` (the symbolic programs a network
may follow, with their variables) and ``counterfactuals`` (pairs of trials whose variable is
swapped, and the labels the program expects). Nothing here knows about networks.
"""
