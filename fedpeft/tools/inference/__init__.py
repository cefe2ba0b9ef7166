"""An exported model on image files (``fedpeft-predict``, ``fedpeft-evaluate``).

* :mod:`.images`: files and folders → images read (the others logged, naming them).
* :mod:`.classify`: :class:`~fedpeft.tools.inference.classify.Classifier`, the model and the
  run's own preprocessing → class probabilities.
* :mod:`.predict`: a CSV of top-k predictions; :mod:`.evaluate`: accuracy, per class,
  and the confusion matrix of a ``<class name>/<images>`` folder.
"""
