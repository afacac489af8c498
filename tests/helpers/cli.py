"""``hivetrain`` commands a test runs against its subnet, as an operator types them."""

from hivetrain.localnet.swarm import NETUID


def run_commands(zygote, options, commands, timeout: float):
    """``hivetrain <command> <flags>`` for each ``(command, *flags)`` of ``commands``, against
    the embedded chain of ``options`` (a ``SwarmOptions``), all at once. They are forked by the
    worker's fork server: most of a new interpreter's time would be importing torch and
    transformers. Their results (``CompletedProcess``, text), in order."""
    return zygote.run([["-m", "hivetrain", command, "--netuid", str(NETUID),
                        "--subtensor.network", "embedded", "--chain.path",
                        str(options.chain_path), "--dht.host_ip", "127.0.0.1", *flags]
                       for command, *flags in commands], timeout)
