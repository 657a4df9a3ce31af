"""Class names of image-classification tasks, in the label order of the datasets they come from.

A merged model keeps one head per task, and each head is only meaningful with its labels: index
``i`` of the head's output is class ``class_names(task)[i]``. The lists below follow the label order
of the Hugging Face Hub datasets that FusionBench evaluates on (``tanganke/sun397``,
``tanganke/stanford_cars``, ``ufldl-stanford/svhn`` ``cropped_digits``, ``ylecun/mnist``, ...), and use
FusionBench's readable spellings, which are also what its fine-tuned models carry in ``id2label``.

Task names are matched loosely: case, ``_``, ``-`` and spaces do not matter (``Stanford_Cars`` is
``stanford-cars``), a few common aliases are known (``cars``, ``oxford_pets``, ``flowers102``), and so
are the dataset repo ids (``tanganke/eurosat``). Tasks that are not built in are added at runtime
with :func:`register_task`.

Example:
    >>> from hubmerge.vision.classnames import class_names, id2label
    >>> len(class_names("stanford_cars"))
    196
    >>> id2label("eurosat")[1]
    'forest'
"""

from __future__ import annotations

import difflib
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import RecipeError, UnknownTaskError

__all__ = [
    "FUSIONBENCH_DATASETS",
    "FUSIONBENCH_TASKS",
    "TASK_DATASETS",
    "DatasetSpec",
    "canonical_task",
    "class_names",
    "dataset_for",
    "id2label",
    "known_tasks",
    "label2id",
    "num_classes",
    "register_task",
]


@dataclass(frozen=True)
class DatasetSpec:
    """Where a task's evaluation data lives on the Hub: ``load_dataset(repo_id, config, split=split)``.

    Attributes:
        repo_id: dataset repository id, e.g. ``"tanganke/eurosat"``.
        config: dataset configuration name, or None for the default one.
        split: the split FusionBench reports accuracy on.
        image_column: column holding the images.
        label_column: column holding the integer labels (a ``ClassLabel``).
    """

    repo_id: str
    config: str | None = None
    split: str = "test"
    image_column: str = "image"
    label_column: str = "label"


# ---------------------------------------------------------------- class-name data
# Names are data, looked up in FusionBench (fusion_bench/tasks/clip_classification) and checked
# against the dataset cards; each tuple is in the label order of the task's dataset.

_SUN397 = (  # 397
    "abbey", "airplane cabin", "airport terminal", "alley", "amphitheater", "amusement arcade",
    "amusement park", "anechoic chamber", "apartment building outdoor", "apse indoor", "aquarium",
    "aqueduct", "arch", "archive", "arrival gate outdoor", "art gallery", "art school", "art studio",
    "assembly line", "athletic field outdoor", "atrium public", "attic", "auditorium", "auto factory",
    "badlands", "badminton court indoor", "baggage claim", "bakery shop", "balcony exterior",
    "balcony interior", "ball pit", "ballroom", "bamboo forest", "banquet hall", "bar", "barn", "barndoor",
    "baseball field", "basement", "basilica", "basketball court outdoor", "bathroom", "batters box",
    "bayou", "bazaar indoor", "bazaar outdoor", "beach", "beauty salon", "bedroom", "berth",
    "biology laboratory", "bistro indoor", "boardwalk", "boat deck", "boathouse", "bookstore",
    "booth indoor", "botanical garden", "bow window indoor", "bow window outdoor", "bowling alley",
    "boxing ring", "brewery indoor", "bridge", "building facade", "bullring", "burial chamber",
    "bus interior", "butchers shop", "butte", "cabin outdoor", "cafeteria", "campsite", "campus",
    "canal natural", "canal urban", "candy store", "canyon", "car interior backseat",
    "car interior frontseat", "carrousel", "casino indoor", "castle", "catacomb", "cathedral indoor",
    "cathedral outdoor", "cavern indoor", "cemetery", "chalet", "cheese factory", "chemistry lab",
    "chicken coop indoor", "chicken coop outdoor", "childs room", "church indoor", "church outdoor",
    "classroom", "clean room", "cliff", "cloister indoor", "closet", "clothing store", "coast", "cockpit",
    "coffee shop", "computer room", "conference center", "conference room", "construction site",
    "control room", "control tower outdoor", "corn field", "corral", "corridor", "cottage garden",
    "courthouse", "courtroom", "courtyard", "covered bridge exterior", "creek", "crevasse", "crosswalk",
    "cubicle office", "dam", "delicatessen", "dentists office", "desert sand", "desert vegetation",
    "diner indoor", "diner outdoor", "dinette home", "dinette vehicle", "dining car", "dining room",
    "discotheque", "dock", "doorway outdoor", "dorm room", "driveway", "driving range outdoor", "drugstore",
    "electrical substation", "elevator door", "elevator interior", "elevator shaft", "engine room",
    "escalator indoor", "excavation", "factory indoor", "fairway", "fastfood restaurant",
    "field cultivated", "field wild", "fire escape", "fire station", "firing range indoor", "fishpond",
    "florist shop indoor", "food court", "forest broadleaf", "forest needleleaf", "forest path",
    "forest road", "formal garden", "fountain", "galley", "game room", "garage indoor", "garbage dump",
    "gas station", "gazebo exterior", "general store indoor", "general store outdoor", "gift shop",
    "golf course", "greenhouse indoor", "greenhouse outdoor", "gymnasium indoor", "hangar indoor",
    "hangar outdoor", "harbor", "hayfield", "heliport", "herb garden", "highway", "hill", "home office",
    "hospital", "hospital room", "hot spring", "hot tub outdoor", "hotel outdoor", "hotel room", "house",
    "hunting lodge outdoor", "ice cream parlor", "ice floe", "ice shelf", "ice skating rink indoor",
    "ice skating rink outdoor", "iceberg", "igloo", "industrial area", "inn outdoor", "islet",
    "jacuzzi indoor", "jail cell", "jail indoor", "jewelry shop", "kasbah", "kennel indoor",
    "kennel outdoor", "kindergarden classroom", "kitchen", "kitchenette", "labyrinth outdoor",
    "lake natural", "landfill", "landing deck", "laundromat", "lecture room", "library indoor",
    "library outdoor", "lido deck outdoor", "lift bridge", "lighthouse", "limousine interior",
    "living room", "lobby", "lock chamber", "locker room", "mansion", "manufactured home", "market indoor",
    "market outdoor", "marsh", "martial arts gym", "mausoleum", "medina", "moat water", "monastery outdoor",
    "mosque indoor", "mosque outdoor", "motel", "mountain", "mountain snowy", "movie theater indoor",
    "museum indoor", "music store", "music studio", "nuclear power plant outdoor", "nursery", "oast house",
    "observatory outdoor", "ocean", "office", "office building", "oil refinery outdoor", "oilrig",
    "operating room", "orchard", "outhouse outdoor", "pagoda", "palace", "pantry", "park",
    "parking garage indoor", "parking garage outdoor", "parking lot", "parlor", "pasture", "patio",
    "pavilion", "pharmacy", "phone booth", "physics laboratory", "picnic area", "pilothouse indoor",
    "planetarium outdoor", "playground", "playroom", "plaza", "podium indoor", "podium outdoor", "pond",
    "poolroom establishment", "poolroom home", "power plant outdoor", "promenade deck", "pub indoor",
    "pulpit", "putting green", "racecourse", "raceway", "raft", "railroad track", "rainforest", "reception",
    "recreation room", "residential neighborhood", "restaurant", "restaurant kitchen", "restaurant patio",
    "rice paddy", "riding arena", "river", "rock arch", "rope bridge", "ruin", "runway", "sandbar",
    "sandbox", "sauna", "schoolhouse", "sea cliff", "server room", "shed", "shoe shop", "shopfront",
    "shopping mall indoor", "shower", "skatepark", "ski lodge", "ski resort", "ski slope", "sky",
    "skyscraper", "slum", "snowfield", "squash court", "stable", "stadium baseball", "stadium football",
    "stage indoor", "staircase", "street", "subway interior", "subway station platform", "supermarket",
    "sushi bar", "swamp", "swimming pool indoor", "swimming pool outdoor", "synagogue indoor",
    "synagogue outdoor", "television studio", "temple east asia", "temple south asia",
    "tennis court indoor", "tennis court outdoor", "tent outdoor", "theater indoor procenium",
    "theater indoor seats", "thriftshop", "throne room", "ticket booth", "toll plaza", "topiary garden",
    "tower", "toyshop", "track outdoor", "train railway", "train station platform", "tree farm",
    "tree house", "trench", "underwater coral reef", "utility room", "valley", "van interior",
    "vegetable garden", "veranda", "veterinarians office", "viaduct", "videostore", "village", "vineyard",
    "volcano", "volleyball court indoor", "volleyball court outdoor", "waiting room", "warehouse indoor",
    "water tower", "waterfall block", "waterfall fan", "waterfall plunge", "watering hole", "wave",
    "wet bar", "wheat field", "wind farm", "windmill", "wine cellar barrel storage",
    "wine cellar bottle storage", "wrestling ring indoor", "yard", "youth hostel",
)

_STANFORD_CARS = (  # 196
    "AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012", "Acura TL Type-S 2008",
    "Acura TSX Sedan 2012", "Acura Integra Type R 2001", "Acura ZDX Hatchback 2012",
    "Aston Martin V8 Vantage Convertible 2012", "Aston Martin V8 Vantage Coupe 2012",
    "Aston Martin Virage Convertible 2012", "Aston Martin Virage Coupe 2012", "Audi RS 4 Convertible 2008",
    "Audi A5 Coupe 2012", "Audi TTS Coupe 2012", "Audi R8 Coupe 2012", "Audi V8 Sedan 1994",
    "Audi 100 Sedan 1994", "Audi 100 Wagon 1994", "Audi TT Hatchback 2011", "Audi S6 Sedan 2011",
    "Audi S5 Convertible 2012", "Audi S5 Coupe 2012", "Audi S4 Sedan 2012", "Audi S4 Sedan 2007",
    "Audi TT RS Coupe 2012", "BMW ActiveHybrid 5 Sedan 2012", "BMW 1 Series Convertible 2012",
    "BMW 1 Series Coupe 2012", "BMW 3 Series Sedan 2012", "BMW 3 Series Wagon 2012",
    "BMW 6 Series Convertible 2007", "BMW X5 SUV 2007", "BMW X6 SUV 2012", "BMW M3 Coupe 2012",
    "BMW M5 Sedan 2010", "BMW M6 Convertible 2010", "BMW X3 SUV 2012", "BMW Z4 Convertible 2012",
    "Bentley Continental Supersports Conv. Convertible 2012", "Bentley Arnage Sedan 2009",
    "Bentley Mulsanne Sedan 2011", "Bentley Continental GT Coupe 2012", "Bentley Continental GT Coupe 2007",
    "Bentley Continental Flying Spur Sedan 2007", "Bugatti Veyron 16.4 Convertible 2009",
    "Bugatti Veyron 16.4 Coupe 2009", "Buick Regal GS 2012", "Buick Rainier SUV 2007",
    "Buick Verano Sedan 2012", "Buick Enclave SUV 2012", "Cadillac CTS-V Sedan 2012",
    "Cadillac SRX SUV 2012", "Cadillac Escalade EXT Crew Cab 2007",
    "Chevrolet Silverado 1500 Hybrid Crew Cab 2012", "Chevrolet Corvette Convertible 2012",
    "Chevrolet Corvette ZR1 2012", "Chevrolet Corvette Ron Fellows Edition Z06 2007",
    "Chevrolet Traverse SUV 2012", "Chevrolet Camaro Convertible 2012", "Chevrolet HHR SS 2010",
    "Chevrolet Impala Sedan 2007", "Chevrolet Tahoe Hybrid SUV 2012", "Chevrolet Sonic Sedan 2012",
    "Chevrolet Express Cargo Van 2007", "Chevrolet Avalanche Crew Cab 2012", "Chevrolet Cobalt SS 2010",
    "Chevrolet Malibu Hybrid Sedan 2010", "Chevrolet TrailBlazer SS 2009",
    "Chevrolet Silverado 2500HD Regular Cab 2012", "Chevrolet Silverado 1500 Classic Extended Cab 2007",
    "Chevrolet Express Van 2007", "Chevrolet Monte Carlo Coupe 2007", "Chevrolet Malibu Sedan 2007",
    "Chevrolet Silverado 1500 Extended Cab 2012", "Chevrolet Silverado 1500 Regular Cab 2012",
    "Chrysler Aspen SUV 2009", "Chrysler Sebring Convertible 2010",
    "Chrysler Town and Country Minivan 2012", "Chrysler 300 SRT-8 2010",
    "Chrysler Crossfire Convertible 2008", "Chrysler PT Cruiser Convertible 2008",
    "Daewoo Nubira Wagon 2002", "Dodge Caliber Wagon 2012", "Dodge Caliber Wagon 2007",
    "Dodge Caravan Minivan 1997", "Dodge Ram Pickup 3500 Crew Cab 2010",
    "Dodge Ram Pickup 3500 Quad Cab 2009", "Dodge Sprinter Cargo Van 2009", "Dodge Journey SUV 2012",
    "Dodge Dakota Crew Cab 2010", "Dodge Dakota Club Cab 2007", "Dodge Magnum Wagon 2008",
    "Dodge Challenger SRT8 2011", "Dodge Durango SUV 2012", "Dodge Durango SUV 2007",
    "Dodge Charger Sedan 2012", "Dodge Charger SRT-8 2009", "Eagle Talon Hatchback 1998",
    "FIAT 500 Abarth 2012", "FIAT 500 Convertible 2012", "Ferrari FF Coupe 2012",
    "Ferrari California Convertible 2012", "Ferrari 458 Italia Convertible 2012",
    "Ferrari 458 Italia Coupe 2012", "Fisker Karma Sedan 2012", "Ford F-450 Super Duty Crew Cab 2012",
    "Ford Mustang Convertible 2007", "Ford Freestar Minivan 2007", "Ford Expedition EL SUV 2009",
    "Ford Edge SUV 2012", "Ford Ranger SuperCab 2011", "Ford GT Coupe 2006", "Ford F-150 Regular Cab 2012",
    "Ford F-150 Regular Cab 2007", "Ford Focus Sedan 2007", "Ford E-Series Wagon Van 2012",
    "Ford Fiesta Sedan 2012", "GMC Terrain SUV 2012", "GMC Savana Van 2012", "GMC Yukon Hybrid SUV 2012",
    "GMC Acadia SUV 2012", "GMC Canyon Extended Cab 2012", "Geo Metro Convertible 1993",
    "HUMMER H3T Crew Cab 2010", "HUMMER H2 SUT Crew Cab 2009", "Honda Odyssey Minivan 2012",
    "Honda Odyssey Minivan 2007", "Honda Accord Coupe 2012", "Honda Accord Sedan 2012",
    "Hyundai Veloster Hatchback 2012", "Hyundai Santa Fe SUV 2012", "Hyundai Tucson SUV 2012",
    "Hyundai Veracruz SUV 2012", "Hyundai Sonata Hybrid Sedan 2012", "Hyundai Elantra Sedan 2007",
    "Hyundai Accent Sedan 2012", "Hyundai Genesis Sedan 2012", "Hyundai Sonata Sedan 2012",
    "Hyundai Elantra Touring Hatchback 2012", "Hyundai Azera Sedan 2012", "Infiniti G Coupe IPL 2012",
    "Infiniti QX56 SUV 2011", "Isuzu Ascender SUV 2008", "Jaguar XK XKR 2012", "Jeep Patriot SUV 2012",
    "Jeep Wrangler SUV 2012", "Jeep Liberty SUV 2012", "Jeep Grand Cherokee SUV 2012",
    "Jeep Compass SUV 2012", "Lamborghini Reventon Coupe 2008", "Lamborghini Aventador Coupe 2012",
    "Lamborghini Gallardo LP 570-4 Superleggera 2012", "Lamborghini Diablo Coupe 2001",
    "Land Rover Range Rover SUV 2012", "Land Rover LR2 SUV 2012", "Lincoln Town Car Sedan 2011",
    "MINI Cooper Roadster Convertible 2012", "Maybach Landaulet Convertible 2012", "Mazda Tribute SUV 2011",
    "McLaren MP4-12C Coupe 2012", "Mercedes-Benz 300-Class Convertible 1993",
    "Mercedes-Benz C-Class Sedan 2012", "Mercedes-Benz SL-Class Coupe 2009",
    "Mercedes-Benz E-Class Sedan 2012", "Mercedes-Benz S-Class Sedan 2012",
    "Mercedes-Benz Sprinter Van 2012", "Mitsubishi Lancer Sedan 2012", "Nissan Leaf Hatchback 2012",
    "Nissan NV Passenger Van 2012", "Nissan Juke Hatchback 2012", "Nissan 240SX Coupe 1998",
    "Plymouth Neon Coupe 1999", "Porsche Panamera Sedan 2012", "Ram C/V Cargo Van Minivan 2012",
    "Rolls-Royce Phantom Drophead Coupe Convertible 2012", "Rolls-Royce Ghost Sedan 2012",
    "Rolls-Royce Phantom Sedan 2012", "Scion xD Hatchback 2012", "Spyker C8 Convertible 2009",
    "Spyker C8 Coupe 2009", "Suzuki Aerio Sedan 2007", "Suzuki Kizashi Sedan 2012",
    "Suzuki SX4 Hatchback 2012", "Suzuki SX4 Sedan 2012", "Tesla Model S Sedan 2012",
    "Toyota Sequoia SUV 2012", "Toyota Camry Sedan 2012", "Toyota Corolla Sedan 2012",
    "Toyota 4Runner SUV 2012", "Volkswagen Golf Hatchback 2012", "Volkswagen Golf Hatchback 1991",
    "Volkswagen Beetle Hatchback 2012", "Volvo C30 Hatchback 2012", "Volvo 240 Sedan 1993",
    "Volvo XC90 SUV 2007", "smart fortwo Convertible 2012",
)

_RESISC45 = (  # 45
    "airplane", "airport", "baseball diamond", "basketball court", "beach", "bridge", "chaparral", "church",
    "circular farmland", "cloud", "commercial area", "dense residential", "desert", "forest", "freeway",
    "golf course", "ground track field", "harbor", "industrial area", "intersection", "island", "lake",
    "meadow", "medium residential", "mobile home park", "mountain", "overpass", "palace", "parking lot",
    "railway", "railway station", "rectangular farmland", "river", "roundabout", "runway", "sea ice",
    "ship", "snowberg", "sparse residential", "stadium", "storage tank", "tennis court", "terrace",
    "thermal power station", "wetland",
)

_EUROSAT = (  # 10
    "annual crop land", "forest", "brushland or shrubland", "highway or road",
    "industrial buildings or commercial buildings", "pasture land", "permanent crop land",
    "residential buildings or homes or apartments", "river", "lake or sea",
)

_GTSRB = (  # 43
    "red and white circle 20 kph speed limit", "red and white circle 30 kph speed limit",
    "red and white circle 50 kph speed limit", "red and white circle 60 kph speed limit",
    "red and white circle 70 kph speed limit", "red and white circle 80 kph speed limit",
    "end / de-restriction of 80 kph speed limit", "red and white circle 100 kph speed limit",
    "red and white circle 120 kph speed limit", "red and white circle red car and black car no passing",
    "red and white circle red truck and black car no passing",
    "red and white triangle road intersection warning", "white and yellow diamond priority road",
    "red and white upside down triangle yield right-of-way", "stop", "empty red and white circle",
    "red and white circle no truck entry", "red circle with white horizonal stripe no entry",
    "red and white triangle with exclamation mark warning",
    "red and white triangle with black left curve approaching warning",
    "red and white triangle with black right curve approaching warning",
    "red and white triangle with black double curve approaching warning",
    "red and white triangle rough / bumpy road warning",
    "red and white triangle car skidding / slipping warning",
    "red and white triangle with merging / narrow lanes warning",
    "red and white triangle with person digging / construction / road work warning",
    "red and white triangle with traffic light approaching warning",
    "red and white triangle with person walking warning",
    "red and white triangle with child and person walking warning",
    "red and white triangle with bicyle warning", "red and white triangle with snowflake / ice warning",
    "red and white triangle with deer warning", "white circle with gray strike bar no speed limit",
    "blue circle with white right turn arrow mandatory", "blue circle with white left turn arrow mandatory",
    "blue circle with white forward arrow mandatory",
    "blue circle with white forward or right turn arrow mandatory",
    "blue circle with white forward or left turn arrow mandatory",
    "blue circle with white keep right arrow mandatory", "blue circle with white keep left arrow mandatory",
    "blue circle with white arrows indicating a traffic circle",
    "white circle with gray strike bar indicating no passing for cars has ended",
    "white circle with gray strike bar indicating no passing for trucks has ended",
)

_DTD = (  # 47
    "banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed", "cracked", "crosshatched",
    "crystalline", "dotted", "fibrous", "flecked", "freckled", "frilly", "gauzy", "grid", "grooved",
    "honeycombed", "interlaced", "knitted", "lacelike", "lined", "marbled", "matted", "meshed", "paisley",
    "perforated", "pitted", "pleated", "polka-dotted", "porous", "potholed", "scaly", "smeared",
    "spiralled", "sprinkled", "stained", "stratified", "striped", "studded", "swirly", "veined", "waffled",
    "woven", "wrinkled", "zigzagged",
)

_CIFAR10 = (  # 10
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

_CIFAR100 = (  # 100
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl",
    "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair",
    "chimpanzee", "clock", "cloud", "cockroach", "couch", "cra", "crocodile", "cup", "dinosaur", "dolphin",
    "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp",
    "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck",
    "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television",
    "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf",
    "woman", "worm",
)

_STL10 = (  # 10
    "airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck",
)

_OXFORD_FLOWERS102 = (  # 102
    "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold",
    "tiger lily", "moon orchid", "bird of paradise", "monkshood", "globe thistle", "snapdragon",
    "colt's foot", "king protea", "spear thistle", "yellow iris", "globe-flower", "purple coneflower",
    "peruvian lily", "balloon flower", "giant white arum lily", "fire lily", "pincushion flower",
    "fritillary", "red ginger", "grape hyacinth", "corn poppy", "prince of wales feathers",
    "stemless gentian", "artichoke", "sweet william", "carnation", "garden phlox", "love in the mist",
    "mexican aster", "alpine sea holly", "ruby-lipped cattleya", "cape flower", "great masterwort",
    "siam tulip", "lenten rose", "barbeton daisy", "daffodil", "sword lily", "poinsettia",
    "bolero deep blue", "wallflower", "marigold", "buttercup", "oxeye daisy", "common dandelion", "petunia",
    "wild pansy", "primula", "sunflower", "pelargonium", "bishop of llandaff", "gaura", "geranium",
    "orange dahlia", "pink-yellow dahlia?", "cautleya spicata", "japanese anemone", "black-eyed susan",
    "silverbush", "californian poppy", "osteospermum", "spring crocus", "bearded iris", "windflower",
    "tree poppy", "gazania", "azalea", "water lily", "rose", "thorn apple", "morning glory",
    "passion flower", "lotus", "toad lily", "anthurium", "frangipani", "clematis", "hibiscus", "columbine",
    "desert-rose", "tree mallow", "magnolia", "cyclamen", "watercress", "canna lily", "hippeastrum",
    "bee balm", "ball moss", "foxglove", "bougainvillea", "camellia", "mallow", "mexican petunia",
    "bromelia", "blanket flower", "trumpet creeper", "blackberry lily",
)

_OXFORD_IIIT_PET = (  # 37
    "abyssinian", "american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle", "bengal",
    "birman", "bombay", "boxer", "british_shorthair", "chihuahua", "egyptian_mau", "english_cocker_spaniel",
    "english_setter", "german_shorthaired", "great_pyrenees", "havanese", "japanese_chin", "keeshond",
    "leonberger", "maine_coon", "miniature_pinscher", "newfoundland", "persian", "pomeranian", "pug",
    "ragdoll", "russian_blue", "saint_bernard", "samoyed", "scottish_terrier", "shiba_inu", "siamese",
    "sphynx", "staffordshire_bull_terrier", "wheaten_terrier", "yorkshire_terrier",
)

_FOOD101 = (  # 101
    "apple pie", "baby back ribs", "baklava", "beef carpaccio", "beef tartare", "beet salad", "beignets",
    "bibimbap", "bread pudding", "breakfast burrito", "bruschetta", "caesar salad", "cannoli",
    "caprese salad", "carrot cake", "ceviche", "cheese plate", "cheesecake", "chicken curry",
    "chicken quesadilla", "chicken wings", "chocolate cake", "chocolate mousse", "churros", "clam chowder",
    "club sandwich", "crab cakes", "creme brulee", "croque madame", "cup cakes", "deviled eggs", "donuts",
    "dumplings", "edamame", "eggs benedict", "escargots", "falafel", "filet mignon", "fish and chips",
    "foie gras", "french fries", "french onion soup", "french toast", "fried calamari", "fried rice",
    "frozen yogurt", "garlic bread", "gnocchi", "greek salad", "grilled cheese sandwich", "grilled salmon",
    "guacamole", "gyoza", "hamburger", "hot and sour soup", "hot dog", "huevos rancheros", "hummus",
    "ice cream", "lasagna", "lobster bisque", "lobster roll sandwich", "macaroni and cheese", "macarons",
    "miso soup", "mussels", "nachos", "omelette", "onion rings", "oysters", "pad thai", "paella",
    "pancakes", "panna cotta", "peking duck", "pho", "pizza", "pork chop", "poutine", "prime rib",
    "pulled pork sandwich", "ramen", "ravioli", "red velvet cake", "risotto", "samosa", "sashimi",
    "scallops", "seaweed salad", "shrimp and grits", "spaghetti bolognese", "spaghetti carbonara",
    "spring rolls", "steak", "strawberry shortcake", "sushi", "tacos", "takoyaki", "tiramisu",
    "tuna tartare", "waffles",
)

_FASHION_MNIST = (  # 10
    "T - shirt / top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
    "Ankle boot",
)

_KMNIST = (  # 10
    "お", "き", "す", "つ", "な", "は", "ま", "や", "れ", "を",
)

_DIGITS = tuple(str(i) for i in range(10))
_LETTERS = tuple(chr(ord("A") + i) for i in range(26))

# The tiny tasks of ``hubmerge.fixtures`` (scikit-learn's 8x8 digits): the "pretrained" base is
# trained on ``digits``, and each fine-tune gets a different label set and head size.
_FIXTURE_TASKS: dict[str, tuple[str, ...]] = {
    "digits": _DIGITS,
    "digits_low": _DIGITS[:5],
    "digits_high": _DIGITS[5:],
    "digits_parity": ("even", "odd"),
    "digits_rotated": _DIGITS,
}

# FusionBench's eight ConvNeXt tasks first, in FusionBench's order, then the other public tasks.
_BUILTIN: dict[str, tuple[str, ...]] = {
    "sun397": _SUN397,
    "stanford-cars": _STANFORD_CARS,
    "resisc45": _RESISC45,
    "eurosat": _EUROSAT,
    "svhn": _DIGITS,
    "gtsrb": _GTSRB,
    "mnist": _DIGITS,
    "dtd": _DTD,
    "cifar10": _CIFAR10,
    "cifar100": _CIFAR100,
    "stl10": _STL10,
    "oxford_flowers102": _OXFORD_FLOWERS102,
    "oxford-iiit-pet": _OXFORD_IIIT_PET,
    "food101": _FOOD101,
    "fashion_mnist": _FASHION_MNIST,
    "kmnist": _KMNIST,
    "emnist_letters": _LETTERS,
    "emnist_mnist": _DIGITS,
    **_FIXTURE_TASKS,
}

_BUILTIN_ALIASES: dict[str, str] = {
    "cars": "stanford-cars",
    "cars196": "stanford-cars",
    "sun": "sun397",
    "nwpu-resisc45": "resisc45",
    "eurosat-rgb": "eurosat",
    "svhn-cropped-digits": "svhn",
    "flowers102": "oxford_flowers102",
    "flowers": "oxford_flowers102",
    "oxford-flowers": "oxford_flowers102",
    "flower102": "oxford_flowers102",
    "oxford-pets": "oxford-iiit-pet",
    "oxford-pet": "oxford-iiit-pet",
    "oxford-iiit-pets": "oxford-iiit-pet",
    "pets": "oxford-iiit-pet",
    "food-101": "food101",
    "cifar-10": "cifar10",
    "cifar-100": "cifar100",
    "stl-10": "stl10",
    "fmnist": "fashion_mnist",
    "emnist": "emnist_letters",
    # other Hub copies of the same datasets (same label order)
    "uoft-cs/cifar10": "cifar10",
    "uoft-cs/cifar100": "cifar100",
}

# ---------------------------------------------------------------- datasets

#: FusionBench's eight ConvNeXt tasks, in its order (head sizes 397, 196, 45, 10, 10, 43, 10, 47).
FUSIONBENCH_TASKS: tuple[str, ...] = (
    "sun397", "stanford-cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd",
)

#: The dataset each of FusionBench's eight tasks is evaluated on.
FUSIONBENCH_DATASETS: dict[str, DatasetSpec] = {
    "sun397": DatasetSpec("tanganke/sun397"),
    "stanford-cars": DatasetSpec("tanganke/stanford_cars"),
    "resisc45": DatasetSpec("tanganke/resisc45"),
    "eurosat": DatasetSpec("tanganke/eurosat"),
    "svhn": DatasetSpec("ufldl-stanford/svhn", "cropped_digits"),
    "gtsrb": DatasetSpec("tanganke/gtsrb"),
    "mnist": DatasetSpec("ylecun/mnist"),
    "dtd": DatasetSpec("tanganke/dtd"),
}

#: The evaluation dataset of every built-in public task (FusionBench's test configurations).
TASK_DATASETS: dict[str, DatasetSpec] = {
    **FUSIONBENCH_DATASETS,
    "cifar10": DatasetSpec("tanganke/cifar10"),
    "cifar100": DatasetSpec("tanganke/cifar100"),
    "stl10": DatasetSpec("tanganke/stl10"),
    "oxford_flowers102": DatasetSpec("dpdl-benchmark/oxford_flowers102"),
    "oxford-iiit-pet": DatasetSpec("timm/oxford-iiit-pet"),
    "food101": DatasetSpec("ethz/food101", split="validation"),
    "fashion_mnist": DatasetSpec("zalando-datasets/fashion_mnist"),
    "kmnist": DatasetSpec("tanganke/kmnist"),
    "emnist_letters": DatasetSpec("tanganke/emnist_letters"),
    "emnist_mnist": DatasetSpec("tanganke/emnist_mnist"),
}

# ---------------------------------------------------------------- registry

_SEPARATORS = re.compile(r"[\s_\-]+")
_lock = threading.Lock()
_tasks: dict[str, tuple[str, ...]] = {}  # canonical name -> class names
_aliases: dict[str, str] = {}  # normalised name or alias -> canonical name


def _normalise(name: str) -> str:
    return _SEPARATORS.sub("-", name.strip().lower()).strip("-")


def _add_alias(alias: str, canonical: str) -> None:
    _aliases.setdefault(_normalise(alias), canonical)


def _init() -> None:
    for name, names in _BUILTIN.items():
        _tasks[name] = names
        _aliases[_normalise(name)] = name
    for alias, name in _BUILTIN_ALIASES.items():
        _add_alias(alias, name)
    for name, spec in TASK_DATASETS.items():
        _add_alias(spec.repo_id, name)
        _add_alias(spec.repo_id.split("/", 1)[1], name)


_init()


def known_tasks() -> list[str]:
    """Every task with known class names: built-in ones first, then those registered at runtime.

    Returns:
        Canonical task names, e.g. ``["sun397", "stanford-cars", ...]``.
    """
    with _lock:
        return list(_tasks)


def canonical_task(task: str) -> str:
    """The registry's own spelling of ``task`` (``"Stanford_Cars"`` -> ``"stanford-cars"``).

    Args:
        task: a task name, an alias or a dataset repo id; case, ``_``, ``-`` and spaces are ignored.

    Returns:
        The canonical task name.

    Raises:
        UnknownTaskError: no task of that name or alias is known.

    Example:
        >>> canonical_task("oxford_pets")
        'oxford-iiit-pet'
    """
    if not isinstance(task, str) or not task.strip():
        raise UnknownTaskError(repr(task), known_tasks(), hint="A task name is a non-empty string.")
    with _lock:
        found = _aliases.get(_normalise(task))
        if found is not None:
            return found
        known = list(_tasks)
        spellings = list(_aliases)
    close = difflib.get_close_matches(_normalise(task), spellings, n=1)
    hint = f"Did you mean '{_aliases[close[0]]}'? " if close else ""
    hint += (
        "For a task of your own, register its class names first: "
        "hubmerge.vision.classnames.register_task(name, names)."
    )
    raise UnknownTaskError(task, known, hint=hint)


def class_names(task: str) -> list[str]:
    """The class names of ``task``, in label order (index i is label i).

    Args:
        task: a task name, an alias or a dataset repo id (see :func:`canonical_task`).

    Returns:
        A new list of class names.

    Raises:
        UnknownTaskError: the task is not known.

    Example:
        >>> class_names("digits_parity")
        ['even', 'odd']
    """
    name = canonical_task(task)
    with _lock:
        return list(_tasks[name])


def num_classes(task: str) -> int:
    """How many classes ``task`` has, i.e. the output size of its head.

    Raises:
        UnknownTaskError: the task is not known.
    """
    return len(class_names(task))


def id2label(task: str) -> dict[int, str]:
    """``{index: class name}`` for ``task``, as a transformers config's ``id2label``.

    Raises:
        UnknownTaskError: the task is not known.

    Example:
        >>> id2label("mnist")[3]
        '3'
    """
    return dict(enumerate(class_names(task)))


def label2id(task: str) -> dict[str, int]:
    """``{class name: index}`` for ``task``, as a transformers config's ``label2id``.

    Raises:
        UnknownTaskError: the task is not known.
    """
    return {label: index for index, label in enumerate(class_names(task))}


def dataset_for(task: str) -> DatasetSpec | None:
    """The Hub dataset ``task`` is usually evaluated on, or None when none is known.

    Raises:
        UnknownTaskError: the task is not known.

    Example:
        >>> spec = dataset_for("svhn")
        >>> spec.repo_id, spec.config, spec.split
        ('ufldl-stanford/svhn', 'cropped_digits', 'test')
    """
    return TASK_DATASETS.get(canonical_task(task))


def register_task(
    name: str, names: Sequence[str], *, aliases: Iterable[str] = (), replace: bool = False
) -> str:
    """Add a task and its class names to the registry (for this process).

    Registering the same names again is a no-op, so callers may register unconditionally.

    Args:
        name: the task name; it must not be a spelling of another task unless ``replace`` is True.
        names: the class names in label order; non-empty, unique strings.
        aliases: other spellings that should find this task.
        replace: replace the class names of an existing task of the same name.

    Returns:
        The canonical name (``name`` itself, or the existing task's spelling when it is replaced).

    Raises:
        RecipeError: ``names`` is empty or holds duplicates or non-strings, or ``name`` (or an alias)
            already means a task with other class names and ``replace`` is False.

    Example:
        >>> register_task("shapes", ["circle", "square", "triangle"])
        'shapes'
        >>> id2label("Shapes")
        {0: 'circle', 1: 'square', 2: 'triangle'}
    """
    if not isinstance(name, str) or not _normalise(name):
        raise RecipeError(f"a task name must be a non-empty string, got {name!r}", field="task")
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise RecipeError(
            f"task '{name}': class names must be a list of strings, got {names!r}", field="task"
        )
    labels = tuple(names)
    if not labels:
        raise RecipeError(f"task '{name}': a task needs at least one class name", field="task")
    bad = [label for label in labels if not isinstance(label, str) or not label]
    if bad:
        raise RecipeError(
            f"task '{name}': class names must be non-empty strings, got {bad[:5]!r}", field="task"
        )
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise RecipeError(
            f"task '{name}': class names must be unique; repeated: {', '.join(duplicates[:10])}", field="task"
        )
    spellings = [_normalise(name)] + [_normalise(alias) for alias in aliases]
    with _lock:
        existing = _aliases.get(spellings[0])
        canonical = existing if existing is not None else name
        for spelling in spellings:
            other = _aliases.get(spelling)
            if other is not None and other != canonical:
                raise RecipeError(
                    f"'{spelling}' already names task '{other}'; pick another name or alias", field="task"
                )
        if existing is not None and _tasks[existing] != labels and not replace:
            raise RecipeError(
                f"task '{existing}' is already registered with {len(_tasks[existing])} other class names. "
                "Pass replace=True to replace them, or register the task under another name.",
                field="task",
            )
        _tasks[canonical] = labels
        for spelling in spellings:
            _aliases[spelling] = canonical
    return canonical
