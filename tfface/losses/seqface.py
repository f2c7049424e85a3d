"""SeqFace losses: Label Smoothing Regularisation (LSR) and the Discriminative Sequence Agent (DSA) loss.

Paper: "SeqFace: Make full use of sequence information for face recognition" (Hu et al., 2018),
https://arxiv.org/abs/1803.06524. A batch mixes labelled images (``sequence_id == -1``) and
frames of unlabelled face sequences (``sequence_id >= 0``, the ``image/sequence_id`` of the
TFRecord schema); :class:`tfface.data.samplers.SequenceAwareSampler` builds such batches.
"""
from __future__ import annotations

import keras
import tensorflow as tf


def mask_sequence_labels(labels: tf.Tensor, sequence_ids: tf.Tensor) -> tf.Tensor:
    """Labels for the head: -1 (no margin, no target) for sequence frames, the label otherwise."""
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    return tf.where(tf.reshape(sequence_ids, [-1]) >= 0, -tf.ones_like(labels), labels)


def lsr_loss(labels: tf.Tensor, logits: tf.Tensor, sequence_ids: tf.Tensor) -> tf.Tensor:
    """Per-example LSR cross-entropy (B,): uniform target over the C labelled classes for sequence frames.

    ``L_i = -(1 - z_i) log p_i(y_i) - z_i (1 / C) sum_k log p_i(k)``, with ``z_i = 1`` for a frame of
    an unlabelled sequence (``sequence_id >= 0``) and 0 for a labelled image, ``p_i`` the softmax
    of the head's logits over the C identities (SeqFace, section 3.2, after Zheng et al.'s LSRO).
    For (B, N, C) logits (``MultiHead``) the N losses are summed, like ``head_loss``. Call the
    head with :func:`mask_sequence_labels` so that sequence frames get no margin.

    Args:
        labels: (B,) int; ignored where ``sequence_ids >= 0``.
        logits: (B, C) or (B, N, C).
        sequence_ids: (B,) int, -1 for labelled images.
    """
    logits = tf.cast(logits, tf.float32)
    log_p = tf.nn.log_softmax(logits, axis=-1)
    num_classes = tf.shape(logits)[-1]
    labels = tf.maximum(tf.cast(tf.reshape(labels, [-1]), tf.int32), 0)
    onehot = tf.one_hot(labels, num_classes, dtype=tf.float32)
    if logits.shape.rank == 3:
        onehot = onehot[:, None, :]
    labelled = -tf.reduce_sum(onehot * log_p, axis=-1)
    uniform = -tf.reduce_mean(log_p, axis=-1)
    is_seq = tf.reshape(sequence_ids, [-1]) >= 0
    if logits.shape.rank == 3:
        is_seq = is_seq[:, None]
    per_example = tf.where(is_seq, uniform, labelled)
    return tf.reduce_sum(per_example, axis=1) if logits.shape.rank == 3 else per_example


def sequence_agent_ids(labels: tf.Tensor, sequence_ids: tf.Tensor, num_classes: int) -> tf.Tensor:
    """Agent of every example: its label for a labelled image, ``num_classes + sequence_id`` for a frame."""
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    seq = tf.cast(tf.reshape(sequence_ids, [-1]), tf.int32)
    return tf.where(seq >= 0, num_classes + seq, labels)


class DSALoss(keras.layers.Layer):
    """Discriminative Sequence Agent loss: pull every example to its agent, push it from the others.

    SeqFace (https://arxiv.org/abs/1803.06524), section 3.3. There is one agent per identity
    (``0..C-1``) and one per sequence (``C..C+S-1``), rows of ``agents`` ((C + S, D),
    non-trainable). Example i (embedding x_i) belongs to agent ``a_i`` (see
    :func:`sequence_agent_ids`). With ``d_ij = ||x_i - c_j||^2 / 4`` and the set J of agents
    considered this step (all of them, or ``num_negative_agents`` drawn at random, as the seed's
    agent dropout), this layer computes, exactly as the SeqFace seed's Caffe layer::

        L = 1/B sum_i [ lambda d_{i,a_i}
                        + (1 - lambda) / |J| sum_{j in J, j != a_i, not (a_i and j both sequences)}
                              max(0, alpha d_{i,a_i} - d_ij + beta) ]

    Two sequence agents are never pushed apart (two sequences may show the same person). The
    agents are moved like centre-loss centres, not by the optimizer: every call with
    ``training=True`` applies ``c_j <- c_j - agent_rate * sum_{i: a_i = j} (c_j - x_i) / (1 + n_j)``
    (n_j = examples of agent j in the batch; under a strategy n_j counts the replica's share of
    the batch and the per-replica updates are summed).

    Warm-up, as the seed's ``center_iter``/``diff_iter``: the layer counts its training calls
    (``iteration``, a non-trainable weight saved in checkpoints, +1 per training call, once per
    step under a strategy). The pull term counts only once ``center_iter`` calls are done, the
    push term once ``diff_iter`` are done; before that the term is 0 (no gradient) while the
    agents are still moved towards their examples. The random subset J is drawn statelessly from
    ``(seed, iteration)``, so a resumed run draws the subsets an uninterrupted one would.

    Args:
        num_classes: C, labelled identities.
        num_sequences: S, unlabelled sequences.
        embedding_dim: D.
        lambda_: weight of the pull term, in [0, 1].
        alpha: >= 1, multiplies the distance to the own agent in the push term.
        beta: >= 0, the margin of the push term.
        agent_rate: step of the agent update.
        num_negative_agents: size of the random subset J, or None for all agents.
        center_iter: training calls before the pull term counts.
        diff_iter: training calls before the push term counts.
        seed: of the random agent subsets.

    Call: ``loss = dsa(embeddings, labels, sequence_ids, training=True)`` -> scalar float32.
    """

    def __init__(
        self,
        num_classes: int,
        num_sequences: int,
        embedding_dim: int,
        lambda_: float = 0.5,
        alpha: float = 1.0,
        beta: float = 0.5,
        agent_rate: float = 0.5,
        num_negative_agents: int | None = None,
        center_iter: int = 0,
        diff_iter: int = 0,
        seed: int = 0,
        **kwargs,
    ):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if not 0.0 <= lambda_ <= 1.0 or alpha < 1.0 or beta < 0.0:
            raise ValueError(f"expected 0 <= lambda_ <= 1, alpha >= 1, beta >= 0; got {lambda_}, {alpha}, {beta}")
        self.num_classes = int(num_classes)
        self.num_sequences = int(num_sequences)
        self.embedding_dim = int(embedding_dim)
        self.lambda_, self.alpha, self.beta = float(lambda_), float(alpha), float(beta)
        self.agent_rate = float(agent_rate)
        self.num_negative_agents = None if num_negative_agents is None else int(num_negative_agents)
        if self.num_negative_agents is not None and not 1 <= self.num_negative_agents <= self.num_agents:
            raise ValueError(f"num_negative_agents: expected 1..{self.num_agents}, got {self.num_negative_agents}")
        if center_iter < 0 or diff_iter < 0:
            raise ValueError(f"expected center_iter, diff_iter >= 0; got {center_iter}, {diff_iter}")
        self.center_iter, self.diff_iter, self.seed = int(center_iter), int(diff_iter), int(seed)
        self.iteration = self.add_weight(
            name="iteration", shape=(), dtype="int64", initializer="zeros", trainable=False,
            aggregation="only_first_replica",
        )
        self.agents = self.add_weight(
            name="agents", shape=(self.num_agents, self.embedding_dim),
            initializer=keras.initializers.GlorotUniform(), trainable=False, aggregation="sum",
        )
        self.built = True

    @property
    def num_agents(self) -> int:
        return self.num_classes + self.num_sequences

    def terms(self, embeddings, labels, sequence_ids) -> tuple[tf.Tensor, tf.Tensor]:
        """The batch means of the pull term ``d_{i,a_i}`` and of the push term (its sum over J
        divided by |J|), without warm-up or weights; J is drawn for the current ``iteration``."""
        x = tf.cast(embeddings, tf.float32)
        agents = tf.convert_to_tensor(self.agents)
        own = sequence_agent_ids(labels, sequence_ids, self.num_classes)
        if self.num_negative_agents is None:
            considered = tf.range(self.num_agents)
        else:
            seed = tf.stack([tf.constant(self.seed, tf.int64), tf.convert_to_tensor(self.iteration)])
            order = tf.argsort(tf.random.stateless_uniform([self.num_agents], seed))
            considered = order[: self.num_negative_agents]
        c = tf.gather(agents, considered)
        d_own = 0.25 * tf.reduce_sum(tf.square(x - tf.gather(agents, own)), axis=1)
        d = 0.25 * tf.maximum(
            tf.reduce_sum(tf.square(x), 1, keepdims=True) - 2.0 * tf.matmul(x, c, transpose_b=True)
            + tf.reduce_sum(tf.square(c), 1)[None, :],
            0.0,
        )
        own_is_seq = (own >= self.num_classes)[:, None]
        other_is_seq = (considered >= self.num_classes)[None, :]
        pushed = tf.logical_and(
            tf.not_equal(own[:, None], considered[None, :]), tf.logical_not(tf.logical_and(own_is_seq, other_is_seq))
        )
        hinge = tf.maximum(self.alpha * d_own[:, None] - d + self.beta, 0.0)
        push = tf.reduce_sum(tf.where(pushed, hinge, tf.zeros_like(hinge)), axis=1)
        size = tf.cast(tf.size(considered), tf.float32)
        return tf.reduce_mean(d_own), tf.reduce_mean(push) / size

    def warmup_weights(self) -> tuple[tf.Tensor, tf.Tensor]:
        """(pull, push) weights for the current ``iteration``: 0.0 during their warm-up, else 1.0."""
        done = tf.convert_to_tensor(self.iteration)
        return tf.cast(done >= self.center_iter, tf.float32), tf.cast(done >= self.diff_iter, tf.float32)

    def call(self, embeddings, labels, sequence_ids, training=None):
        pull, push = self.terms(embeddings, labels, sequence_ids)
        on_pull, on_push = self.warmup_weights()
        loss = self.lambda_ * on_pull * pull + (1.0 - self.lambda_) * on_push * push
        if training:
            self.update_agents(embeddings, sequence_agent_ids(labels, sequence_ids, self.num_classes))
            self.iteration.assign_add(1)
        return loss

    def update_agents(self, embeddings: tf.Tensor, agent_ids: tf.Tensor) -> None:
        """``c_j <- c_j - agent_rate * sum_{i: a_i = j} (c_j - x_i) / (1 + n_j)`` (called by ``call``)."""
        x = tf.stop_gradient(tf.cast(embeddings, tf.float32))
        ids = tf.cast(tf.reshape(agent_ids, [-1]), tf.int32)
        agents = tf.convert_to_tensor(self.agents)
        diff = tf.math.unsorted_segment_sum(tf.gather(agents, ids) - x, ids, self.num_agents)
        count = tf.math.unsorted_segment_sum(tf.ones_like(ids, tf.float32), ids, self.num_agents)
        # The tf.Variable's assign_sub (see CenterLoss): summed over replicas under a strategy.
        self.agents.value.assign_sub(self.agent_rate * diff / (1.0 + count)[:, None])

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "num_sequences": self.num_sequences,
            "embedding_dim": self.embedding_dim,
            "lambda_": self.lambda_,
            "alpha": self.alpha,
            "beta": self.beta,
            "agent_rate": self.agent_rate,
            "num_negative_agents": self.num_negative_agents,
            "center_iter": self.center_iter,
            "diff_iter": self.diff_iter,
            "seed": self.seed,
        }
