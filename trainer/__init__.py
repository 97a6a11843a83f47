"""The card's trainer/ folder, installed as rankup_tf.trainer."""

# Under its own name (`python -m trainer.<module>` in a checkout) this package
# loads before the command imports TensorFlow: rankup_tf, imported first,
# then gives the command its quiet start (rankup_tf/startup.py).
import rankup_tf  # noqa: F401
