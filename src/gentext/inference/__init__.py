"""From a trained model to text: sampling transforms, generation, the TextModel API, export."""
