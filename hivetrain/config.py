"""One typed configuration for every hivetrain neuron, filled from bittensor-style dotted flags.

Each option is declared once, as a dataclass field with its default, help text and check; the
command-line parser, ``--help`` and validation are all generated from those declarations, so a
default lives in exactly one place. A bad value raises :class:`ConfigError` with one line that
names the flag, which the CLI prints instead of a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from hivetrain import major_version
from hivetrain.errors import OperatorError

MODEL_PRESETS = ("tiny", "gpt2", "gpt2-medium", "gpt2-677m", "gpt2-large",
                 "mm-tiny", "mm-clip-gpt2-medium")
NETWORKS = ("finney", "test", "local", "embedded")


class ConfigError(OperatorError, ValueError):
    """A configuration value that a neuron cannot run with; the message names the flag."""


def option(default: Any, help: str, *, choices: tuple | None = None, check: Callable | None = None,
           metavar: str | None = None):
    """Declare one flag: its default, its ``--help`` text, allowed choices and a value check.

    :param check: ``value -> error text or None``; run after parsing, before anything starts.
    """
    metadata = {"help": help, "choices": choices, "check": check, "metavar": metavar}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def positive(value) -> Optional[str]:
    return None if value is not None and value > 0 else "must be positive"


def non_negative(value) -> Optional[str]:
    return None if value is not None and value >= 0 else "must be zero or positive"


def fraction(value) -> Optional[str]:
    return None if 0.0 <= value < 1.0 else "must be in [0, 1)"


def nice_increment(value) -> Optional[str]:
    return None if 0 <= value <= 19 else "must be a nice increment in [0, 19]"


def port_number(value) -> Optional[str]:
    return None if 0 <= value <= 65535 else "must be a TCP port in [0, 65535] (0 picks a free one)"


@dataclass
class WalletConfig:
    name: str = option("default", "Coldkey wallet name (btcli wallet list shows yours).")
    hotkey: str = option("default", "Hotkey name inside the wallet.")
    path: str = option("~/.bittensor/wallets", "Folder that holds the wallets.")


@dataclass
class SubtensorConfig:
    network: str = option("finney", "Chain to use: finney, test, local, embedded (the dev chain "
                                    "stored in --chain.path) or a ws:// / wss:// URL.")
    chain_endpoint: Optional[str] = option(None, "Explicit ws:// or wss:// endpoint; overrides "
                                                 "--subtensor.network.", metavar="URL")


@dataclass
class ChainConfig:
    path: Optional[str] = option(None, "SQLite file of the embedded dev chain (default: "
                                       "chain.sqlite under the run directory).", metavar="FILE")
    block_time: float = option(1.0, "Seconds per block on the embedded dev chain.", check=positive)


@dataclass
class AxonConfig:
    port: int = option(8091, "TCP port of the neuron's HTTP API.", check=port_number)
    external_ip: Optional[str] = option(None, "IP served on chain for the API (default: "
                                              "--dht.announce_ip, else 127.0.0.1).", metavar="IP")


@dataclass
class DHTConfig:
    port: int = option(0, "TCP port for hivemind's libp2p (0 picks a free one).", check=port_number)
    host_ip: str = option("0.0.0.0", "Interface the DHT listens on.", metavar="IP")
    announce_ip: Optional[str] = option(None, "Public IP other peers should dial (set it behind "
                                              "NAT or when binding 0.0.0.0).", metavar="IP")
    initial_peers: list = option([], "Multiaddrs of peers to bootstrap from, e.g. "
                                     "/ip4/1.2.3.4/tcp/4000/p2p/Qm...", metavar="MADDR")
    bootstrap_timeout: float = option(30.0, "Seconds to keep retrying the initial peers before "
                                            "giving up.", check=positive)


@dataclass
class LoggingConfig:
    debug: bool = option(False, "Verbose logs.")
    trace: bool = option(False, "Very verbose logs, including hivemind internals.")


@dataclass
class NeuronConfig:
    dir: Optional[str] = option(None, "Run directory for identity, checkpoints and metrics "
                                      "(default: ~/.hivetrain/<role>-<wallet>-<hotkey>).",
                                metavar="DIR")
    seed: int = option(0, "Run seed: every peer builds byte-identical initial weights from it.",
                       check=non_negative)


@dataclass
class ModelConfig:
    preset: str = option("tiny", "Architecture preset; mm-* are multimodal (image encoder, "
                                 "resampler and projection into GPT-2).", choices=MODEL_PRESETS)
    trainable: str = option("full", "Multimodal presets: 'full' trains everything, 'projection' "
                                    "freezes the image encoder and GPT-2 and trains (and "
                                    "averages) only the resampler and projection.",
                            choices=("full", "projection"))
    pretrained: Optional[str] = option(None, "Start from a transformers checkpoint (hub name or "
                                             "local folder) instead of the seeded init.",
                                       metavar="NAME_OR_PATH")


@dataclass
class DataConfig:
    dataset: str = option("embedded", "'embedded' (text: the corpus shipped with hivetrain, "
                                      "prose from Python's documentation; multimodal: generated "
                                      "shapes scenes with captions) or a Hugging Face hub "
                                      "dataset name.",
                          metavar="NAME")
    files: Optional[str] = option(None, "Glob of local .txt/.jsonl/.parquet files (multimodal: "
                                        "parquet files or an image folder with metadata.jsonl); "
                                        "overrides --data.dataset.", metavar="GLOB")
    text_column: str = option("text", "Column holding the text in jsonl/parquet/hub data.")
    image_column: str = option("image", "Multimodal: column holding the images.")
    caption_column: str = option("caption", "Multimodal: column holding the captions.")
    tokenizer: Optional[str] = option(None, "Tokenizer name or path (default: the byte-level BPE "
                                            "shipped in assets/tokenizer).", metavar="NAME_OR_PATH")
    seq_len: int = option(128, "Tokens per training sequence.", check=positive)
    heldout_fraction: float = option(0.02, "Share of documents held out for evaluation and "
                                           "validator probes; never trained on.", check=fraction)
    cache_dir: str = option("~/.cache/hivetrain", "Where token arrays are cached.")


@dataclass
class TrainConfig:
    device: str = option("auto", "cpu, cuda, cuda:N or auto (CUDA when present).")
    mode: str = option("diloco", "diloco: local AdamW steps, then an outer Nesterov step on the "
                                 "swarm-averaged parameter change (little traffic); sync: average "
                                 "gradients every --train.target_batch_size samples.",
                       choices=("diloco", "sync"))
    batch_size: int = option(8, "Sequences per local forward/backward pass.", check=positive)
    target_batch_size: int = option(1024, "sync mode: samples the whole swarm accumulates per "
                                          "epoch (one averaged optimizer step).", check=positive)
    inner_steps: int = option(500, "diloco mode: local optimizer steps per peer (on average over "
                                   "the swarm) between outer steps (epochs).", check=positive)
    outer_lr: float = option(0.7, "diloco mode: learning rate of the outer Nesterov SGD.",
                             check=positive)
    outer_momentum: float = option(0.9, "diloco mode: momentum of the outer Nesterov SGD.",
                                   check=fraction)
    overlap: bool = option(False, "diloco mode: average round k while round k+1 trains (one "
                                  "round of staleness, no idle wait for the all-reduce).")
    lr: float = option(1e-3, "Peak learning rate.", check=positive)
    weight_decay: float = option(0.01, "AdamW weight decay.", check=non_negative)
    warmup_epochs: int = option(5, "Epochs of linear learning-rate warm-up.", check=non_negative)
    optimizer: str = option("adamw", "adamw, or adamw8bit (bitsandbytes; best on CUDA).",
                            choices=("adamw", "adamw8bit"))
    grad_compression: str = option("fp16", "Compression of averaged gradients (sync) or "
                                           "parameter changes (diloco).",
                                   choices=("none", "fp16", "int8"))
    state_compression: str = option("fp16", "Compression of the averaged parameters and of the "
                                            "parameters sent to joining peers (sync; diloco "
                                            "sends its state exactly).",
                                    choices=("none", "fp16", "int8"))
    matchmaking_time: float = option(3.0, "Seconds to wait for peers to form an averaging group.",
                                     check=positive)
    averaging_timeout: float = option(30.0, "Seconds before an all-reduce round is abandoned.",
                                      check=positive)
    threads: int = option(0, "torch CPU threads (0 keeps torch's default).", check=non_negative)
    nice: int = option(10, "CPU priority of the training loop, as a nice increment (0-19; 0 "
                           "leaves it alone). The miner's API, DHT, averager and p2pd keep "
                           "theirs, so probes and all-reduces are answered promptly on a busy "
                           "CPU; an idle CPU trains as fast either way. Linux only.",
                       check=nice_increment)
    duration: float = option(0.0, "Stop after this many seconds (0 runs until stopped).",
                             check=non_negative)
    max_epochs: int = option(0, "Stop at this global epoch (0 runs until stopped).",
                             check=non_negative)
    log_every: float = option(5.0, "Seconds between metric reports.", check=positive)
    eval_batches: int = option(4, "Held-out batches per evaluation.", check=positive)
    checkpoint_every: int = option(5, "Write a checkpoint every N epochs (0 disables).",
                                   check=non_negative)


@dataclass
class ValidatorConfig:
    interval: float = option(30.0, "Seconds between probe rounds.", check=positive)
    timeout: float = option(10.0, "Seconds a miner has to answer a probe.", check=positive)
    alpha: float = option(0.05, "Weight of the newest round in the score moving average.",
                          check=positive)
    weights_every: int = option(20, "Blocks between weight submissions (the chain's "
                                     "weights_rate_limit also applies).", check=positive)
    probe_batch_size: int = option(4, "Held-out sequences per probe.", check=positive)
    max_epoch_lag: int = option(1, "Epochs a miner's model may lag the validator's and still be "
                                   "acceptable.", check=non_negative)
    loss_tolerance: float = option(0.05, "Relative difference allowed between a miner's loss and "
                                         "the validator's recomputation.", check=positive)
    min_cosine: float = option(0.8, "Minimum cosine similarity of the gradient spot-check.",
                               check=fraction)
    update_batches: int = option(4, "Batches of assigned data, and as many of random held-out "
                                    "data, on which each miner's update is evaluated.",
                                 check=positive)
    update_budget: float = option(60.0, "Seconds one epoch's update check may take; when "
                                        "checking every miner would take longer, a rotating "
                                        "subset is checked so each miner is checked every few "
                                        "epochs (0: every miner every epoch).",
                                  check=non_negative)
    weighting: str = option("contribution", "Weights from the score EMA times each miner's "
                                            "verified-samples EMA (contribution), or from the "
                                            "score EMA alone (rule).",
                            choices=("contribution", "rule"))


@dataclass
class BlacklistConfig:
    min_stake: float = option(0.0, "Stake (TAO) a validator needs before a miner answers it.",
                              check=non_negative)


@dataclass
class WandbConfig:
    off: bool = option(False, "Do not log to wandb.")
    project: Optional[str] = option(None, "wandb project (default: hivetrain-netuid<N>).")
    entity: Optional[str] = option(None, "wandb entity (team or user).")


@dataclass
class Config:
    """Everything a neuron runs with. ``role`` is set by the subcommand, not by a flag."""

    netuid: int = option(1, "Subnet id on the chain.", check=non_negative)
    wallet: WalletConfig = field(default_factory=WalletConfig)
    subtensor: SubtensorConfig = field(default_factory=SubtensorConfig)
    chain: ChainConfig = field(default_factory=ChainConfig)
    axon: AxonConfig = field(default_factory=AxonConfig)
    dht: DHTConfig = field(default_factory=DHTConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    neuron: NeuronConfig = field(default_factory=NeuronConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    validator: ValidatorConfig = field(default_factory=ValidatorConfig)
    blacklist: BlacklistConfig = field(default_factory=BlacklistConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    role: str = "miner"

    @property
    def run_dir(self) -> Path:
        """The neuron's own folder: identity key, checkpoints, metrics, wandb files."""
        if self.neuron.dir:
            return Path(self.neuron.dir).expanduser()
        return Path("~/.hivetrain").expanduser() / f"{self.role}-{self.wallet.name}-{self.wallet.hotkey}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS = [f.name for f in dataclasses.fields(Config) if f.default_factory is not dataclasses.MISSING]


def _iter_options(sections):
    """Yield ``(flag_name, section_name, field)`` for every option, top-level ones first."""
    for f in dataclasses.fields(Config):
        if f.default_factory is dataclasses.MISSING and "help" in f.metadata:
            yield f.name, None, f
    for name in sections:
        section_type = Config.__dataclass_fields__[name].default_factory
        for f in dataclasses.fields(section_type):
            yield f"{name}.{f.name}", name, f


def add_config_arguments(parser: argparse.ArgumentParser, sections=SECTIONS) -> None:
    """Add every option of ``sections`` to ``parser`` under its dotted flag, grouped by section."""
    groups = {}
    for flag, section, f in _iter_options(sections):
        target = parser if section is None else groups.setdefault(
            section, parser.add_argument_group(f"{section} options"))
        meta = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f"{meta['help']} (default: {default if default not in (None, []) else 'none'})"
        kwargs: dict[str, Any] = {"dest": flag, "help": help_text, "default": argparse.SUPPRESS}
        if isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(default, list):
            kwargs.update(nargs="*", metavar=meta["metavar"])
        else:
            kwargs.update(type=_scalar_type(f), metavar=meta["metavar"] or _scalar_type(f).__name__.upper())
            if meta["choices"]:
                kwargs.update(choices=meta["choices"], metavar=None)
        target.add_argument(f"--{flag}", **kwargs)


def _scalar_type(f) -> type:
    hint = str(f.type)
    for name, kind in (("int", int), ("float", float)):
        if hint == name:
            return kind
    return str


def config_from_args(namespace: argparse.Namespace, role: str, sections=SECTIONS) -> Config:
    """Build and validate a :class:`Config` from parsed arguments; raises :class:`ConfigError`."""
    cfg = Config(role=role)
    for flag, value in vars(namespace).items():
        if flag.count(".") == 1 and flag.split(".")[0] in SECTIONS:
            section, name = flag.split(".")
            setattr(getattr(cfg, section), name, value)
        elif flag in Config.__dataclass_fields__:
            setattr(cfg, flag, value)
    validate(cfg, sections)
    return cfg


def validate(cfg: Config, sections=SECTIONS) -> None:
    """Run every option's check, then the checks that span options; first problem wins."""
    for flag, section, f in _iter_options(sections):
        value = getattr(cfg if section is None else getattr(cfg, section), f.name)
        check = f.metadata.get("check")
        problem = check(value) if check else None
        if problem:
            raise ConfigError(f"--{flag} {problem}, got {value!r}")
    network = cfg.subtensor.network
    if network not in NETWORKS and not network.startswith(("ws://", "wss://")):
        raise ConfigError(f"--subtensor.network must be one of {', '.join(NETWORKS)} or a ws:// URL, "
                          f"got {network!r}")
    if cfg.train.device != "auto" and not (cfg.train.device == "cpu" or cfg.train.device.startswith("cuda")):
        raise ConfigError(f"--train.device must be auto, cpu, cuda or cuda:N, got {cfg.train.device!r}")
    if cfg.train.target_batch_size < cfg.train.batch_size:
        raise ConfigError("--train.target_batch_size must be at least --train.batch_size")


# A neuron restarted at once after a crash (pm2 restarts it right away) can find its fixed ports
# still held by its predecessor's helpers: they die with it (hivetrain.lifeline), but not in the
# same instant. Measured in a loaded fresh-clone make test: a miner forked again right after a
# SIGKILL found the old p2pd still on its --dht.port and stopped. A taken port is therefore
# checked again for this long before it is an error.
PORT_RELEASE_WAIT_S = 5.0


def check_port_free(port: int, flag: str, host: str = "0.0.0.0",
                    wait: float = PORT_RELEASE_WAIT_S) -> None:
    """Fail fast with a clear line when a fixed port is taken, before any process starts (after
    ``wait`` seconds in which it was never free)."""
    if port == 0:
        return
    deadline = time.monotonic() + wait
    while not _bindable(host, port):
        if time.monotonic() >= deadline:
            raise ConfigError(f"{flag} {port} is already in use; pick another port or stop the "
                              f"process holding it (ss -ltnp | grep {port})")
        time.sleep(0.2)  # polling the kernel until the port's holder has exited


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def fingerprint(agreed: dict) -> str:
    """Hash of everything peers must agree on, so incompatible peers never average together.

    :param agreed: JSON-serialisable facts (model config, tokenizer digest, sequence length,
        optimizer recipe); the package's major version is added here.
    """
    payload = json.dumps({**agreed, "major_version": major_version}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def swarm_agreement(cfg: Config) -> dict:
    """The configuration values every peer of one swarm must share (besides model and tokenizer)."""
    t = cfg.train
    return {"seq_len": cfg.data.seq_len, "seed": cfg.neuron.seed, "pretrained": cfg.model.pretrained,
            "trainable": cfg.model.trainable,
            "optimizer": {"name": t.optimizer, "lr": t.lr, "weight_decay": t.weight_decay,
                          "warmup_epochs": t.warmup_epochs, **_mode_agreement(t)}}


def _mode_agreement(t: TrainConfig) -> dict:
    """The settings of the training mode that decide what one epoch means."""
    if t.mode == "sync":
        return {"mode": "sync", "target_batch_size": t.target_batch_size}
    return {"mode": "diloco", "inner_steps": t.inner_steps, "outer_lr": t.outer_lr,
            "outer_momentum": t.outer_momentum, "overlap": t.overlap}


def run_id(preset: str, fp: str) -> str:
    """The hivemind run_id: readable prefix plus the fingerprint of agreed settings."""
    return f"hivetrain-{preset}-{fp}"
