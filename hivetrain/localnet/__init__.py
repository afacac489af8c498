"""The local swarm: every neuron of the subnet on 127.0.0.1, started by one command."""
