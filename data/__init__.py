"""The card's data/ folder, installed as rankup_tf.data."""

# Under its own name (`python -m data.<module>` in a checkout) this package
# loads before the command imports TensorFlow: rankup_tf, imported first,
# then gives the command its quiet start (rankup_tf/startup.py).
import rankup_tf  # noqa: F401
