"""The silo's ClientApp: one train handler (training rounds and the final cache release).

The handler only unpacks the message, calls the library (``cadasg_dist.federation.client``), and
packs the reply. The silo's ledger and trainer state persist in ``context.state`` between rounds.
SecAgg+ messages go through Flower's ``secaggplus_mod``; the others pass straight through.
"""

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from cadasg_dist.federation.client import handle_train, optional_secaggplus_mod

app = ClientApp(mods=[optional_secaggplus_mod])


@app.train()
def train(msg: Message, context: Context) -> Message:
    return handle_train(msg, context)
